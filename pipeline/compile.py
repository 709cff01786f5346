"""Stage ``compile_<sub>``: the traced ExportedProgram -> Relax -> TVM executables.

Relax import: ``from_exported_program(ep, keep_params_as_input=True, unwrap_unit_return_tuple=True)`` and
``detach_params``; for ``model.dtype=float16`` ``ToMixedPrecision`` (the importer cannot take a half model, so
we import float32 and convert; parameters become float16 inputs, activations float16 with float32 accumulation,
entry inputs/outputs stay float32); then
``BundleModelParams`` makes the weights one tuple argument and the entry function is named after the submodel:
``<sub>(inputs..., params)``, params in the order of the trace's ``params`` (= tensor-cache records).

Outputs, in ``Layout.compile_dir()``:
  <sub>.webgpu.tar   wasm32 object files of the WebGPU build (pipeline.wasm_link links them into <sub>.wasm)
  <sub>.llvm.so      CPU build of the same module (verification only)
  <sub>.json         written last: per target the param names/dtypes in call order, input/output specs,
                     kernel count, largest device buffer (``max_buffer_bytes``), timings
"""
from __future__ import annotations

import time
from pathlib import Path

from . import trace
from .config import Config
from .errors import WebsdError
from .fsutil import atomic_path, write_json
from .layout import Layout

CONFIG_KEYS = ("model.dtype",)
TARGETS = ("webgpu", "llvm")
WASM_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
# WebGPU's default maxStorageBufferBindingSize; the page checks max_buffer_bytes against the adapter's limit
WEBGPU_DEFAULT_MAX_BINDING = 128 << 20


def paths(cfg: Config, sub: str) -> dict[str, Path]:
    """``{"webgpu": <sub>.webgpu.tar, "llvm": <sub>.llvm.so, "json": <sub>.json}``."""
    compile_dir = Layout.from_config(cfg).compile_dir()
    return {"webgpu": compile_dir / f"{sub}.webgpu.tar", "llvm": compile_dir / f"{sub}.llvm.so",
            "json": compile_dir / f"{sub}.json"}


def file_deps(cfg: Config, sub: str) -> list[Path]:
    # the trace's description (graph hash + parameter shapes), not the .pt2: weights are inputs of the compiled
    # module, so new weight values must not recompile (compile still reads the graph from the .pt2)
    return [trace.paths(cfg, sub)[1]]


def default_targets(cfg: Config) -> tuple[str, ...]:
    """WebGPU always; llvm only when the model is verified on the CPU (it costs ~30 s for SD v1.5's UNet)."""
    from . import models

    return TARGETS if models.cpu_verification(cfg) else ("webgpu",)


def targets(cfg: Config, sub: str, which: tuple[str, ...] | None = None) -> list[Path]:
    p = paths(cfg, sub)
    return [*(p[t] for t in which or default_targets(cfg)), p["json"]]


def tvm_target(kind: str):
    import tvm

    if kind == "webgpu":
        return tvm.target.Target({"kind": "webgpu"}, host=WASM_HOST)
    if kind == "llvm":
        # LLVM -O0: the CPU build only checks TVM's lowering against PyTorch; -O3 made the tiny UNet's
        # object code take ~10 s instead of ~1.5 s
        return tvm.target.Target({"kind": "llvm", "opt-level": 0})
    raise WebsdError(f"unknown compile target {kind!r}; choose one of {', '.join(TARGETS)}")


def import_relax(cfg: Config, sub: str):
    """The submodel's Relax module (entry ``<sub>``, weights as one tuple argument) and its description."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    ep, info = trace.load(cfg, sub)
    mod = from_exported_program(ep, keep_params_as_input=True, unwrap_unit_return_tuple=True)
    del ep
    mod, _weights = relax.frontend.detach_params(mod)  # weights come from the tensor cache, not from here
    del _weights
    func = mod["main"]
    num_input = int(func.attrs["num_input"])
    args = [_var_name(p) for p in func.params[num_input:]]
    if args != [p["arg"] for p in info["params"]]:
        raise WebsdError(f"TVM's importer orders {sub}'s parameters differently from its trace description; "
                         f"re-run trace_{sub} with this torch/TVM pair")
    if cfg.model.dtype == "float16":
        floats = [p["arg"] for p in info["params"] if p["dtype"].startswith("float")]
        # out_dtype is the matmul/conv accumulator: float32 accumulation (results stored as float16) cut the
        # tiny UNet's error against PyTorch from 0.078 to 0.016 (guidance 7.5 amplifies it) at little cost
        mod = relax.transform.ToMixedPrecision(out_dtype="float32", fp16_input_names=floats)(mod)
        mod = gather_before_cast(mod)
    mod = relax.transform.BundleModelParams("params")(mod)
    func = mod["main"].with_attr("global_symbol", sub)
    return tvm.IRModule({sub: func}), info


def gather_before_cast(mod):
    """Rewrite ``take(astype(table), ids)`` into ``astype(take(table, ids))`` in every Relax function.

    ToMixedPrecision keeps embedding lookups in float32 by casting the whole float16 table first: for SD v1.5's
    CLIP that is a 145 MiB float32 copy of the token embedding on every call (over WebGPU's default 128 MiB
    binding limit). Casting only the gathered rows gives the same values."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    table, ids = wildcard(), wildcard()
    cast = is_op("relax.astype")(table)
    pattern = is_op("relax.take")(cast, ids)

    def rewrite(expr, matches):
        rows = relax.op.take(matches[table], matches[ids], axis=expr.attrs.axis, mode=expr.attrs.mode)
        return relax.op.astype(rows, matches[cast].attrs.dtype)

    out = tvm.IRModule({gv: rewrite_call(pattern, rewrite, f) if isinstance(f, relax.Function) else f
                        for gv, f in mod.functions.items()}, attrs=mod.attrs)
    return relax.transform.DeadCodeElimination()(out)


def _var_name(var) -> str:
    return var.name if hasattr(var, "name") else var.name_hint  # TVM >= 0.26 renamed name_hint


def _tensor_bytes(ty) -> int:
    """Bytes of a statically shaped Relax/TIR tensor type, 0 when unknown."""
    import tvm

    shape, dtype = getattr(ty, "shape", None), getattr(ty, "dtype", None)
    if shape is None or dtype is None or str(dtype) == "":
        return 0
    dims = shape.values if hasattr(shape, "values") else shape
    n = 1
    for d in dims:
        if not isinstance(d, (int, tvm.tirx.IntImm)):
            return 0
        n *= int(d)
    dt = tvm.DataType(str(dtype))
    return n * ((dt.bits * dt.lanes + 7) // 8)


def _type_desc(ty) -> dict:
    return {"shape": [int(d) for d in ty.shape.values], "dtype": str(ty.dtype)}


def _scope(buf) -> str:
    scope = getattr(buf, "scope", None)
    return str(scope() if callable(scope) else getattr(buf, "storage_scope", "global") or "global")


def buffer_sizes(mod) -> dict:
    """Largest device buffers of a lowered module: Relax storage allocations and tensors, and TIR buffers
    in global memory (kernel arguments and intermediates that stayed in device memory)."""
    import tvm
    from tvm import relax, tirx

    storage, tensors, tir_global = [0], [0], [0]

    def visit_relax(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name.endswith("alloc_storage"):
            shape = e.args[0]
            if isinstance(shape, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in shape.values):
                storage.append(int(shape.values[0]))
        ty = getattr(e, "ty", None)
        if ty is not None:
            tensors.append(_tensor_bytes(ty))

    def visit_tir(node):
        bufs = []
        if isinstance(node, tirx.SBlock):
            bufs = list(node.alloc_buffers)
        elif isinstance(node, tirx.AllocBuffer):
            bufs = [node.buffer]
        for b in bufs:
            if _scope(b) == "global":
                tir_global.append(_tensor_bytes(b))

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for p in func.params:
                fields = p.ty.fields if isinstance(p.ty, relax.TupleType) else [p.ty]
                tensors.extend(_tensor_bytes(f) for f in fields)
            relax.analysis.post_order_visit(func.body, visit_relax)
        elif isinstance(func, tirx.PrimFunc):
            # TVM >= 0.26: buffer parameters are Vars typed with the buffer (older: func.buffer_map)
            bufs = func.buffer_map.values() if hasattr(func, "buffer_map") else [p.ty for p in func.params]
            tir_global.extend(_tensor_bytes(b) for b in bufs)
            tirx.stmt_functor.post_order_visit(func.body, visit_tir)
    return {"max_storage_bytes": max(storage), "max_tensor_bytes": max(tensors),
            "max_tir_global_bytes": max(tir_global),
            "max_buffer_bytes": max(max(storage), max(tensors), max(tir_global))}


def aliased_kernel_calls(mod) -> list[str]:
    """Kernel calls of a lowered module that pass the same tensor in two argument slots.

    TVM's WGSL declares every buffer ``var<storage, read_write>`` and WebGPU rejects two writable bindings of
    overlapping ranges, so such a call fails on the page (the llvm build and verify cannot notice)."""
    import tvm
    from tvm import relax

    found = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.GlobalVar):
            args = [a for a in e.args if isinstance(a, relax.Var)]
            if len(args) != len(set(args)):
                dup = next(a for a in args if args.count(a) > 1)
                found.append(f"{e.op.name_hint}({_var_name(dup)} twice)")

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return found


def _save_webgpu(executable, out: Path) -> None:
    """wasm object files of the WebGPU build, for pipeline.wasm_link (runtime helper) to link."""
    from .wasm_link import export_wasm_objects

    export_wasm_objects(executable, out)


def _save_llvm(executable, out: Path) -> None:
    with atomic_path(out) as work:
        executable.export_library(str(work))


def build(mod, info: dict, cfg: Config, sub: str, target: str) -> dict:
    """Build the imported module for one target and save the artifact; returns its description."""
    import tvm
    from tvm import relax

    start = time.perf_counter()
    tgt = tvm_target(target)
    # run the Relax pipeline ourselves (what tvm.compile would run) to measure buffers of the module built
    with tgt:
        lowered = (relax.get_default_pipeline(tgt) if target == "webgpu" else relax.get_pipeline("default"))(mod)
    sizes = buffer_sizes(lowered)
    if target == "webgpu":
        aliased = aliased_kernel_calls(lowered)
        if aliased:
            raise WebsdError(f"{sub}: kernel call {aliased[0]} would bind one buffer twice, which WebGPU forbids; "
                             f"change pipeline/submodels/{sub}.py so that op gets distinct tensors")
    executable = tvm.compile(lowered, tgt, relax_pipeline=None)
    built = time.perf_counter()
    (_save_webgpu if target == "webgpu" else _save_llvm)(executable, paths(cfg, sub)[target])
    param_types = mod[sub].params[-1].ty.fields
    return {
        "target": target,
        "params": [{"name": p["name"], "shape": p["shape"], "dtype": str(t.dtype)}
                   for p, t in zip(info["params"], param_types)],
        "kernels": sum(1 for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)),
        **sizes,
        "fits_default_webgpu_limit": sizes["max_buffer_bytes"] <= WEBGPU_DEFAULT_MAX_BINDING,
        "seconds": {"build": round(built - start, 2), "save": round(time.perf_counter() - built, 2)},
    }


def compile_submodel(cfg: Config, sub: str, which: tuple[str, ...] | None = None) -> dict:
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
            "inputs": [{"name": _var_name(p), **_type_desc(p.ty)} for p in entry.params[:-1]],
            "output": _type_desc(entry.ret_ty), "tvm_version": tvm.__version__,
            "import_seconds": round(time.perf_counter() - start, 2)}
    if set(which) != set(TARGETS):  # a partial rebuild (by hand) keeps the other target's description
        from .fsutil import read_json

        old = read_json(paths(cfg, sub)["json"], {})
        desc.update({t: old[t] for t in TARGETS if t not in which and t in old and paths(cfg, sub)[t].exists()})
    for t in which:
        desc[t] = build(mod, info, cfg, sub, t)
    write_json(paths(cfg, sub)["json"], desc)
    return desc
