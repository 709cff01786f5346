"""Stage ``compile_<sub>``: the traced ExportedProgram -> Relax -> TVM executables.

Relax import: ``from_exported_program(ep, keep_params_as_input=True, unwrap_unit_return_tuple=True)`` and
``detach_params``; for ``model.dtype=float16`` ``ToMixedPrecision`` (the importer cannot take a half model, so
we import float32 and convert; parameters become float16 inputs, activations float16 with float32 accumulation,
entry inputs/outputs stay float32); then
``BundleModelParams`` makes the weights one tuple argument and the entry function is named after the submodel:
``<sub>(inputs..., params)``, params in the order of the trace's ``params`` (= tensor-cache records).

Outputs, in ``Layout.compile_dir()``:
  <sub>.webgpu.tar   wasm32 object files of the WebGPU build (pipeline.model.wasm_link links them into <sub>.wasm)
  <sub>.llvm.so      CPU build of the same module (verification only)
  <sub>.kernels.json with webgpu.kernels=subgroup-matrix: the WGSL overrides of the kernels TVM cannot emit
                     ({entry point: WGSL}, pipeline/webgpu/subgroup_matrix/); the site ships them with the variant
  <sub>.json         written last: per target the param names/dtypes in call order, input/output specs,
                     kernel count, largest device buffer (``max_buffer_bytes``), timings; for WebGPU the
                     limits profile it was checked against and the limits it needs (``required_limits``)
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config import Config
from ..errors import WebsdError
from ..fsutil import atomic_path, write_json
from ..layout import Layout
from ..toolchain import tvm_api
from ..webgpu import build as webgpu_build
from ..webgpu import flash_attention
from ..webgpu import inspection, limits, passes, subgroup_matrix
from . import params, trace, verify_policy

# model.dtype and webgpu.kernels are in the output path
CONFIG_KEYS = ("webgpu.limits", "webgpu.matmul", "webgpu.subgroup_matrix")
TARGETS = ("webgpu", "llvm")


def paths(cfg: Config, sub: str) -> dict[str, Path]:
    """``{"webgpu": <sub>.webgpu.tar, "llvm": <sub>.llvm.so, "json": <sub>.json}``."""
    layout = Layout.from_config(cfg)
    compile_dir = layout.compile_dir()
    return {"webgpu": layout.webgpu_objects(sub), "llvm": compile_dir / f"{sub}.llvm.so",
            "json": layout.compile_json(sub), "kernels": layout.kernel_overrides(sub)}


def inputs(cfg: Config, sub: str) -> list[Path]:
    # the trace's description (graph hash + parameter shapes), not the .pt2: weights are inputs of the compiled
    # module, so new weight values must not recompile (compile still reads the graph from the .pt2)
    return [trace.paths(cfg, sub)[1]]


def default_targets(cfg: Config) -> tuple[str, ...]:
    """WebGPU always; llvm only when the model is verified on the CPU (it costs ~30 s for SD v1.5's UNet), which is
    the default kernel set's build (a variant's twins compute what the kernels they stand for compute)."""
    if cfg.webgpu.kernels != "default":
        return ("webgpu",)
    return TARGETS if verify_policy.cpu_verification(cfg) else ("webgpu",)


def outputs(cfg: Config, sub: str, which: tuple[str, ...] | None = None) -> list[Path]:
    p = paths(cfg, sub)
    overrides = [p["kernels"]] if cfg.webgpu.kernels == "subgroup-matrix" else []
    return [*(p[t] for t in which or default_targets(cfg)), *overrides, p["json"]]


def tvm_target(kind: str):
    import tvm

    if kind == "webgpu":
        return webgpu_build.target()
    if kind == "llvm":
        # LLVM -O0: the CPU build only checks TVM's lowering against PyTorch; -O3 made the tiny UNet's
        # object code take ~10 s instead of ~1.5 s
        return tvm.target.Target({"kind": "llvm", "opt-level": 0})
    raise WebsdError(f"unknown compile target {kind!r}; choose one of {', '.join(TARGETS)}")


def import_relax(cfg: Config, sub: str):
    """The submodel's Relax module (entry ``<sub>``, weights as one tuple argument) and its description."""
    import tvm
    from tvm import relax

    ep, info = trace.load(cfg, sub)
    mod = tvm_api.import_exported_program(ep, flash_attention.CONVERTERS)
    del ep
    mod, _weights = relax.frontend.detach_params(mod)  # weights come from the tensor cache, not from here
    del _weights
    func = mod["main"]
    num_input = int(func.attrs["num_input"])
    args = [tvm_api.var_name(p) for p in func.params[num_input:]]
    if args != [p["arg"] for p in info["params"]]:
        raise WebsdError(f"TVM's importer orders {sub}'s parameters differently from its trace description; "
                         f"re-run trace_{sub} with this torch/TVM pair")
    if cfg.model.dtype == "float16":
        floats = [p["arg"] for p in info["params"] if params.stored_dtype(p, "float16") == "float16"]
        # out_dtype is the matmul/conv accumulator: float32 accumulation (results stored as float16) cut the
        # tiny UNet's error against PyTorch from 0.078 to 0.016 (guidance 7.5 amplifies it) at little cost
        mod = flash_attention.keep_attention_attrs(
            relax.transform.ToMixedPrecision(out_dtype="float32", fp16_input_names=floats), mod)
        mod = passes.gather_before_cast(mod)
    mod = relax.transform.BundleModelParams("params")(mod)
    func = mod["main"].with_attr("global_symbol", sub)
    return tvm.IRModule({sub: func}), info


def _type_desc(ty) -> dict:
    return {"shape": [int(d) for d in ty.shape.values], "dtype": str(ty.dtype)}


def _save_webgpu(executable, out: Path) -> None:
    """wasm object files of the WebGPU build, for pipeline.model.wasm_link (runtime helper) to link."""
    from .wasm_link import export_wasm_objects

    export_wasm_objects(executable, out)


def _save_llvm(executable, out: Path) -> None:
    with atomic_path(out) as work:
        executable.export_library(str(work))


def build(mod, info: dict, cfg: Config, sub: str, target: str) -> dict:
    """Build the imported module for one target and save the artifact; returns its description.

    The WebGPU build is checked against the ``webgpu.limits`` profile: a kernel or buffer over a limit stops
    the stage with one line (pipeline.webgpu.limits), before anything is written."""
    import tvm
    from tvm import relax

    start = time.perf_counter()
    extra = {}
    if target == "webgpu":
        profile = subgroup_matrix.PROFILES[cfg.webgpu.subgroup_matrix] \
            if cfg.webgpu.kernels == "subgroup-matrix" else None
        lowered, executable, use = webgpu_build.build(mod, sub, cfg.webgpu.limits,
                                                      [p["name"] for p in info["params"]], cfg.webgpu.matmul,
                                                      subgroup_matrix=profile)
        if profile:
            kernels = subgroup_matrix.overrides(executable, lowered, profile)
            use = limits.with_overrides(use, kernels)  # what the page runs: the overrides' workgroup memory
            limits.check(sub, use, cfg.webgpu.limits)
            write_json(paths(cfg, sub)["kernels"], kernels)
            extra["subgroup_matrix_kernels"] = sorted(kernels)
        extra = {**extra, "kernel_set": cfg.webgpu.kernels, "limits_profile": cfg.webgpu.limits,
                 "matmul_schedule": cfg.webgpu.matmul,
                 "required_limits": use.required(), "kernel_costs": inspection.kernel_costs(lowered),
                 "widest_kernels": sorted(({"kernel": k.name, "storage_buffers": k.storage_buffers}
                                           for k in use.kernels), key=lambda k: -k["storage_buffers"])[:3]}
    else:
        tgt = tvm_target(target)
        with tgt:
            # attention is the fused kernel on every target (here its serial form), so verify checks the page's
            # attention arithmetic; TVM's own CPU legalization of a float16 causal nn.attention is wrong by far
            lowered = relax.get_pipeline("default")(flash_attention.fuse_attention(gpu=False)(mod))
        executable = tvm.compile(lowered, tgt, relax_pipeline=None)
    built = time.perf_counter()
    (_save_webgpu if target == "webgpu" else _save_llvm)(executable, paths(cfg, sub)[target])
    param_types = tvm_api.expr_type(mod[sub].params[-1]).fields
    return {
        "target": target,
        "params": [{"name": p["name"], "shape": p["shape"], "dtype": str(t.dtype)}
                   for p, t in zip(info["params"], param_types)],
        "kernels": sum(1 for f in lowered.functions.values() if isinstance(f, tvm_api.tir().PrimFunc)),
        **inspection.buffer_sizes(lowered),
        **extra,
        "seconds": {"build": round(built - start, 2), "save": round(time.perf_counter() - built, 2)},
    }


def run(cfg: Config, sub: str, which: tuple[str, ...] | None = None) -> dict:
    """Stage ``compile_<sub>``: import the trace once, build every target in ``which`` (WebGPU for the page,
    llvm for verify; default: ``default_targets``), then write ``<sub>.json``."""
    import tvm

    which = which or default_targets(cfg)
    unknown = [t for t in which if t not in TARGETS]
    if unknown:
        raise WebsdError(f"unknown compile target {unknown[0]!r}; choose from {', '.join(TARGETS)}")
    start = time.perf_counter()
    mod, info = import_relax(cfg, sub)
    entry = mod[sub]
    desc = {"submodel": sub, "function": sub, "dtype": cfg.model.dtype,
            # the entry function as the page calls it: inputs..., then the params tuple
            "inputs": [{"name": tvm_api.var_name(p), **_type_desc(tvm_api.expr_type(p))} for p in entry.params[:-1]],
            "output": _type_desc(tvm_api.ret_type(entry)),
            "tvm_version": tvm.__version__,
            "import_seconds": round(time.perf_counter() - start, 2)}
    if set(which) != set(TARGETS):  # a partial rebuild (by hand) keeps the other target's description
        from ..fsutil import read_json

        old = read_json(paths(cfg, sub)["json"], {})
        desc.update({t: old[t] for t in TARGETS if t not in which and t in old and paths(cfg, sub)[t].exists()})
    for t in which:
        desc[t] = build(mod, info, cfg, sub, t)
    write_json(paths(cfg, sub)["json"], desc)
    return desc
