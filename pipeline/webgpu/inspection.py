"""What a WebGPU build contains: its WGSL, each kernel's launch grid and cost, every buffer a kernel binds (with
its bytes), and kernel calls WebGPU would reject. The limit check (pipeline.webgpu.limits) and the kernel costs a
GPU profile reads (the site's ``model/kernels.json``) are made from these.
"""
from __future__ import annotations

from ..toolchain import tvm_api
from . import limits


def tensor_bytes(shape, dtype) -> int:
    """Bytes of a statically shaped tensor (Relax/TIR shape, TVM or numpy-style dtype), 0 when unknown."""
    import tvm

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


def _type_bytes(ty) -> int:
    """Bytes of a statically shaped Relax tensor type, 0 when unknown."""
    return tensor_bytes(getattr(ty, "shape", None), getattr(ty, "dtype", None))


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
    functions = {gv.name_hint for gv in mod.functions}

    def visit_relax(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name.endswith("alloc_storage"):
            shape = e.args[0]
            if isinstance(shape, relax.ShapeExpr) and all(isinstance(v, T.IntImm) for v in shape.values):
                found[f"storage#{sum(k.startswith('storage#') for k in found)}"] = int(shape.values[0])

    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            public = func.attrs is not None and "global_symbol" in func.attrs
            # the entry function; without one (or one not in the module), every public function
            if gv.name_hint == entry or (entry not in functions and public):
                for p in func.params:
                    ty = tvm_api.expr_type(p)
                    fields = ty.fields if hasattr(ty, "fields") else [ty]
                    labels = (param_names or []) if hasattr(ty, "fields") else [tvm_api.var_name(p)]
                    for i, f in enumerate(fields):
                        label = labels[i] if i < len(labels) else f"{tvm_api.var_name(p)}[{i}]"
                        found[f"{'weight' if hasattr(ty, 'fields') else 'input'} {label}"] = _type_bytes(f)
            relax.analysis.post_order_visit(func.body, visit_relax)
        elif isinstance(func, T.PrimFunc):
            def visit_tir(node, kernel=gv.name_hint):
                for b in tvm_api.allocated_buffers(node):
                    if _scope(b) == "global":
                        found[f"{kernel}/{b.name}"] = tensor_bytes(b.shape, b.dtype)
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
                found.append(f"{e.op.name_hint}({tvm_api.var_name(dup)} twice)")

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return found


def webgpu_source(executable) -> str:
    """The WGSL of every kernel of a ``tvm.compile`` result (the device modules' source)."""
    seen, out, stack = set(), [], [executable.mod]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if tvm_api.module_kind(m) == "webgpu":
            out.append(tvm_api.module_source(m))
        stack.extend(tvm_api.imported_modules(m))
    return "\n".join(out)


def launch_grids(mod) -> dict[str, tuple[int, int, int]]:
    """Per PrimFunc of a scheduled module: its static ``blockIdx`` extents (x, y, z); dynamic ones are left out."""
    T = tvm_api.tir()
    grids = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, T.PrimFunc):
            continue
        extents, dynamic = {"blockIdx.x": 1, "blockIdx.y": 1, "blockIdx.z": 1}, []

        def visit(node):
            tag = None
            if isinstance(node, T.For) and node.thread_binding is not None:
                tag, extent = node.thread_binding.thread_tag, node.extent
            elif isinstance(node, T.AttrStmt) and node.attr_key == "thread_extent":
                tag, extent = node.node.thread_tag, node.value
            if tag in extents:
                if isinstance(extent, T.IntImm):
                    extents[tag] = max(extents[tag], int(extent))
                else:
                    dynamic.append(tag)

        T.stmt_functor.post_order_visit(func.body, visit)
        if not dynamic:
            name = func.attrs["global_symbol"] if func.attrs is not None and "global_symbol" in func.attrs \
                else gv.name_hint
            grids[str(name)] = (extents["blockIdx.x"], extents["blockIdx.y"], extents["blockIdx.z"])
    return grids


def kernel_costs(mod) -> dict[str, dict[str, int]]:
    """Per PrimFunc of a scheduled module: TVM's FLOP estimate and the bytes of its tensor arguments (each read or
    written once: a lower bound of its memory traffic). For profiles: achieved FLOP/s and bytes/s per kernel."""
    import tvm

    T = tvm_api.tir()
    costs = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, T.PrimFunc):
            continue
        buffers = list(func.buffer_map.values()) if hasattr(func, "buffer_map") else \
            [p for p in func.params if getattr(p, "shape", None) is not None]
        nbytes = sum(tensor_bytes(buf.shape, buf.dtype) for buf in buffers)
        try:
            flops = int(tvm_api.estimate_tir_flops(tvm.IRModule({"main": func})))
        except Exception:  # noqa: BLE001 - an estimate we cannot make is left out, not guessed
            flops = -1
        name = func.attrs["global_symbol"] if func.attrs is not None and "global_symbol" in func.attrs \
            else gv.name_hint
        costs[str(name)] = {"flops": flops, "bytes": nbytes}
    return costs


def webgpu_use(lowered, executable, sub: str, param_names: list[str]) -> limits.ModuleUse:
    """What the WebGPU build needs of the browser: per kernel (from its WGSL and launch grid), per buffer."""
    kernels = limits.wgsl_kernels(webgpu_source(executable))
    limits.attach_grids(kernels, launch_grids(lowered))
    return limits.ModuleUse(kernels, bound_buffers(lowered, sub, param_names))
