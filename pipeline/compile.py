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
                     kernel count, largest device buffer (``max_buffer_bytes``), timings; for WebGPU the
                     limits profile it was checked against and the limits it needs (``required_limits``)
"""
from __future__ import annotations

import time
from pathlib import Path

from . import gpu_kernels, params, trace, tvm_api, verify_policy, webgpu_limits
from .config import Config
from .errors import WebsdError
from .fsutil import atomic_path, write_json
from .layout import Layout

CONFIG_KEYS = ("webgpu.limits", "webgpu.matmul")  # model.dtype is in the output path
TARGETS = ("webgpu", "llvm")


def paths(cfg: Config, sub: str) -> dict[str, Path]:
    """``{"webgpu": <sub>.webgpu.tar, "llvm": <sub>.llvm.so, "json": <sub>.json}``."""
    layout = Layout.from_config(cfg)
    compile_dir = layout.compile_dir()
    return {"webgpu": layout.webgpu_objects(sub), "llvm": compile_dir / f"{sub}.llvm.so",
            "json": layout.compile_json(sub)}


def file_deps(cfg: Config, sub: str) -> list[Path]:
    # the trace's description (graph hash + parameter shapes), not the .pt2: weights are inputs of the compiled
    # module, so new weight values must not recompile (compile still reads the graph from the .pt2)
    return [trace.paths(cfg, sub)[1]]


def default_targets(cfg: Config) -> tuple[str, ...]:
    """WebGPU always; llvm only when the model is verified on the CPU (it costs ~30 s for SD v1.5's UNet)."""
    return TARGETS if verify_policy.cpu_verification(cfg) else ("webgpu",)


def targets(cfg: Config, sub: str, which: tuple[str, ...] | None = None) -> list[Path]:
    p = paths(cfg, sub)
    return [*(p[t] for t in which or default_targets(cfg)), p["json"]]


def tvm_target(kind: str):
    import tvm

    if kind == "webgpu":
        return tvm_api.webgpu_target()
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
    mod = tvm_api.import_exported_program(ep)
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
        floats = [p["arg"] for p in info["params"] if params.stored_dtype(p, "float16") == "float16"]
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
        rows = tvm_api.take(matches[table], matches[ids], axis=expr.attrs.axis,
                            mode=getattr(expr.attrs, "mode", "fast"))
        return relax.op.astype(rows, matches[cast].attrs.dtype)

    out = tvm.IRModule({gv: rewrite_call(pattern, rewrite, f) if isinstance(f, relax.Function) else f
                        for gv, f in mod.functions.items()}, attrs=mod.attrs)
    return relax.transform.DeadCodeElimination()(out)


def _var_name(var) -> str:
    return tvm_api.var_name(var)


def _tensor_bytes(ty) -> int:
    """Bytes of a statically shaped Relax/TIR tensor type, 0 when unknown."""
    import tvm

    shape, dtype = getattr(ty, "shape", None), getattr(ty, "dtype", None)
    if shape is None or dtype is None or str(dtype) == "":
        return 0
    dims = shape.values if hasattr(shape, "values") else shape
    n = 1
    for d in dims:
        if not isinstance(d, (int, tvm_api.tir().IntImm)):
            return 0
        n *= int(d)
    dt = tvm.DataType(str(dtype))
    return n * ((dt.bits * dt.lanes + 7) // 8)


def _type_desc(ty) -> dict:
    return {"shape": [int(d) for d in ty.shape.values], "dtype": str(ty.dtype)}


def _scope(buf) -> str:
    scope = getattr(buf, "scope", None)
    return str(scope() if callable(scope) else getattr(buf, "storage_scope", "global") or "global")


def bound_buffers(mod, entry: str | None = None, param_names: list[str] | None = None) -> dict[str, int]:
    """Every device buffer of a lowered module that a kernel binds, with its bytes: the entry function's inputs
    and weights (the page allocates them), the VM's storage allocations, and global-memory intermediates of
    kernels (runtime workspaces). tvmjs binds each GPU buffer whole, so these sizes are the binding sizes."""
    import tvm
    from tvm import relax

    T = tvm_api.tir()
    found: dict[str, int] = {}
    names = {gv.name_hint for gv in mod.functions}

    def visit_relax(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name.endswith("alloc_storage"):
            shape = e.args[0]
            if isinstance(shape, relax.ShapeExpr) and all(isinstance(v, T.IntImm) for v in shape.values):
                found[f"storage#{sum(k.startswith('storage#') for k in found)}"] = int(shape.values[0])

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            public = func.attrs is not None and "global_symbol" in func.attrs
            if gv.name_hint == entry or (entry is None and public) or (entry not in names and public):
                for p in func.params:
                    ty = tvm_api.expr_type(p)
                    fields = ty.fields if hasattr(ty, "fields") else [ty]
                    names = (param_names or []) if hasattr(ty, "fields") else [_var_name(p)]
                    for i, f in enumerate(fields):
                        label = names[i] if i < len(names) else f"{_var_name(p)}[{i}]"
                        found[f"{'weight' if hasattr(ty, 'fields') else 'input'} {label}"] = _tensor_bytes(f)
            relax.analysis.post_order_visit(func.body, visit_relax)
        elif isinstance(func, T.PrimFunc):
            def visit_tir(node, kernel=gv.name_hint):
                for b in tvm_api.allocated_buffers(node):
                    if _scope(b) == "global":
                        found[f"{kernel}/{b.name}"] = _tensor_bytes(b)
            T.stmt_functor.post_order_visit(func.body, visit_tir)
    return found


def buffer_sizes(mod) -> dict:
    """Largest device buffers of a lowered module (see ``bound_buffers``)."""
    found = bound_buffers(mod)
    storage = [v for k, v in found.items() if k.startswith("storage#")]
    return {"max_storage_bytes": max(storage, default=0), "max_buffer_bytes": max(found.values(), default=0)}


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


def webgpu_use(lowered, executable, sub: str, param_names: list[str]) -> webgpu_limits.ModuleUse:
    """What the WebGPU build needs of the browser: per kernel (from its WGSL and launch grid), per buffer."""
    kernels = webgpu_limits.wgsl_kernels(tvm_api.webgpu_source(executable))
    webgpu_limits.attach_grids(kernels, tvm_api.launch_grids(lowered))
    return webgpu_limits.ModuleUse(kernels, bound_buffers(lowered, sub, param_names))


def lower(mod, target: str, limits_profile: str = "default", matmul: str = "dlight"):
    """The Relax pipeline for one target, run by us (tvm.compile would run TVM's): for WebGPU it is fitted to the
    limits profile (pipeline.tvm_api.webgpu_pipeline)."""
    from tvm import relax

    tgt = tvm_target(target)
    limits = webgpu_limits.profile(limits_profile)
    with tgt:
        if target == "webgpu":
            return tvm_api.webgpu_pipeline(tgt, limits["maxStorageBuffersPerShaderStage"], gpu_kernels.rewrites(),
                                           gpu_kernels.schedule_rules(matmul))(mod), tgt
        return relax.get_pipeline("default")(mod), tgt


def build_webgpu(mod, sub: str, limits_profile: str, param_names: list[str] = (), matmul: str = "dlight"):
    """Lower and build the WebGPU module and check it against the limits profile: ``(lowered, executable, use)``,
    or a one-line WebsdError naming the kernel or buffer over a limit."""
    import tvm

    lowered, tgt = lower(mod, "webgpu", limits_profile, matmul)
    aliased = aliased_kernel_calls(lowered)
    if aliased:
        raise WebsdError(f"{sub}: kernel call {aliased[0]} would bind one buffer twice, which WebGPU forbids; "
                         f"change pipeline/submodels/{sub}.py so that op gets distinct tensors")
    executable = tvm.compile(lowered, tgt, relax_pipeline=None)
    use = webgpu_use(lowered, executable, sub, list(param_names))
    webgpu_limits.check(sub, use, limits_profile)
    return lowered, executable, use


def build(mod, info: dict, cfg: Config, sub: str, target: str) -> dict:
    """Build the imported module for one target and save the artifact; returns its description.

    The WebGPU build is checked against the ``webgpu.limits`` profile: a kernel or buffer over a limit stops
    the stage with one line (pipeline.webgpu_limits), before anything is written."""
    import tvm

    start = time.perf_counter()
    extra = {}
    if target == "webgpu":
        lowered, executable, use = build_webgpu(mod, sub, cfg.webgpu.limits, [p["name"] for p in info["params"]],
                                                cfg.webgpu.matmul)
        extra = {"limits_profile": cfg.webgpu.limits, "matmul_schedule": cfg.webgpu.matmul, "required_limits": use.required(),
                 "kernel_costs": tvm_api.kernel_costs(lowered),
                 "widest_kernels": sorted(({"kernel": k.name, "storage_buffers": k.storage_buffers}
                                           for k in use.kernels), key=lambda k: -k["storage_buffers"])[:3]}
    else:
        lowered, tgt = lower(mod, target)
        executable = tvm.compile(lowered, tgt, relax_pipeline=None)
    built = time.perf_counter()
    (_save_webgpu if target == "webgpu" else _save_llvm)(executable, paths(cfg, sub)[target])
    param_types = tvm_api.expr_type(mod[sub].params[-1]).fields
    return {
        "target": target,
        "params": [{"name": p["name"], "shape": p["shape"], "dtype": str(t.dtype)}
                   for p, t in zip(info["params"], param_types)],
        "kernels": sum(1 for f in lowered.functions.values() if isinstance(f, tvm_api.tir().PrimFunc)),
        **buffer_sizes(lowered),
        **extra,
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
            "inputs": [{"name": _var_name(p), **_type_desc(tvm_api.expr_type(p))} for p in entry.params[:-1]],
            "output": _type_desc(tvm_api.ret_type(entry)),
            "tvm_version": tvm.__version__,
            "import_seconds": round(time.perf_counter() - start, 2)}
    if set(which) != set(TARGETS):  # a partial rebuild (by hand) keeps the other target's description
        from .fsutil import read_json

        old = read_json(paths(cfg, sub)["json"], {})
        desc.update({t: old[t] for t in TARGETS if t not in which and t in old and paths(cfg, sub)[t].exists()})
    for t in which:
        desc[t] = build(mod, info, cfg, sub, t)
    write_json(paths(cfg, sub)["json"], desc)
    return desc
