"""The one seam to TVM's Python API: everything version-specific that the stages use goes through here.

TVM renames things between releases (``tvm.tir`` -> ``tvm.tirx`` in v0.24, ``name_hint`` -> ``name``,
``struct_info`` -> ``ty``; shared/TVM-0.21.md lists more). The version-specific calls are made by an adapter, one
module per TVM API generation in ``pipeline/tvm_versions/`` (v0_21, v0_26), chosen by the imported TVM's version.

Also here: the WebGPU compile pipeline. It is TVM's generic GPU pipeline (``relax.backend.gpu_generic``) with
passes of ours, because TVM's Relax FuseOps has no bound on kernel arguments (its ``max_function_args`` is wired
to 0) and WebGPU has one:
  * ``split_wide_concats`` first: a concat of more tensors than a kernel may bind becomes a tree of concats;
  * ``split_wide_fusions`` after FuseOps: a fused group whose kernel would bind more storage buffers than the
    limits profile allows is dissolved back into its separate kernels;
  * ``align_storage`` after memory planning: every storage allocation is rounded up to 4 bytes, since WebGPU
    binds storage buffers in multiples of 4 (a 3-element float16 tensor is 6 bytes).
"""
from __future__ import annotations

from typing import Any

from . import tvm_versions


def adapter():
    """The version adapter (pipeline/tvm_versions) for the TVM this process imports (tvm_build's selection)."""
    import tvm

    return tvm_versions.for_version_string(tvm.__version__)


def tir():
    """TVM's TIR namespace: ``tvm.tirx`` (>= 0.24) or ``tvm.tir``."""
    return adapter().tir()


def schedule(func):
    """A TIR schedule of ``func``: ``tvm.s_tir.Schedule`` (>= 0.24) or ``tvm.tir.Schedule``."""
    return adapter().schedule(func)


def schedule_block(sch, name: str):
    """The block named ``name`` of a TIR schedule (an ``SBlock`` from v0.24 on)."""
    return adapter().schedule_block(sch, name)


def mark_scheduled(func):
    """``func`` marked as hand-scheduled, so TVM's default schedule rules (dlight) leave it as it is."""
    return func.with_attr(adapter().scheduled_attr, True)


def dlight():
    """TVM's default GPU schedule rules: ``tvm.s_tir.dlight`` (>= 0.24) or ``tvm.dlight``."""
    return adapter().dlight()


def var_name(var) -> str:
    return adapter().var_name(var)  # TVM >= 0.26 renamed name_hint to name


def expr_type(expr):
    """A Relax expression's type/struct info (``.ty`` in TVM >= 0.26, ``.struct_info`` before)."""
    return adapter().expr_type(expr)


def tensor_type(shape, dtype: str):
    """A Relax tensor type (``relax.TensorType``; ``relax.TensorStructInfo`` before v0.26)."""
    return adapter().tensor_type(shape, dtype)


def ret_type(func):
    """A Relax function's return type (``ret_ty``; ``ret_struct_info`` before v0.26)."""
    return adapter().ret_type(func)


def dump_tensor_cache(arrays, out_dir, metadata: dict, shard_cap_mb: int) -> None:
    """TVM's tensor-cache writer (``dump_tensor_cache``; ``dump_ndarray_cache`` before v0.22), raw encoding; the
    index is ``tensor-cache.json`` whatever the version."""
    adapter().dump_tensor_cache(arrays, out_dir, metadata, shard_cap_mb)


def cpu_tensor(array):
    """A TVM tensor on the CPU from a numpy array (``tvm.runtime.tensor``; ``tvm.nd.array`` before v0.22)."""
    return adapter().cpu_tensor(array)


def cpu_vm(library_path):
    """A Relax virtual machine on the CPU for an exported llvm library."""
    import tvm
    from tvm import relax

    return relax.VirtualMachine(tvm.runtime.load_module(str(library_path)), tvm.cpu())


def take(table, ids, axis: int, mode: str = "fast"):
    """``relax.op.take``; its ``mode`` argument exists from v0.22 (before, it behaves as the default)."""
    return adapter().take(table, ids, axis, mode)


def allocated_buffers(node) -> list:
    """The buffers a TIR statement allocates (block ``alloc_buffers``; ``AllocBuffer``, or ``DeclBuffer`` over an
    ``Allocate`` before v0.24)."""
    return adapter().allocated_buffers(node)


def import_exported_program(ep):
    """A torch ``ExportedProgram`` as a Relax module (``main``: user inputs, then the weights; ``num_input``)."""
    return adapter().import_exported_program(ep)


def webgpu_target():
    import tvm

    return tvm.target.Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})


# --- the WebGPU pipeline ----------------------------------------------------------------------------------------


def _tensor_count(ty) -> int:
    fields = getattr(ty, "fields", None)
    if fields is not None:
        return sum(_tensor_count(f) for f in fields)
    return 1 if hasattr(ty, "dtype") and hasattr(ty, "shape") else 0


def fused_buffer_count(func) -> int:
    """Storage buffers the kernel of a fused Relax group binds: its tensor parameters plus its outputs."""
    return sum(_tensor_count(expr_type(p)) for p in func.params) + _tensor_count(ret_type(func))


def split_wide_fusions(max_buffers: int):
    """A module pass: dissolve every fused group (``Primitive`` Relax function) whose kernel would bind more
    than ``max_buffers`` storage buffers; its calls become the group's separate kernels again."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Unfuse(relax.PyExprMutator):
        def __init__(self, mod, wide):
            super().__init__(mod)
            self.mod_, self.wide = mod, wide

        def remap(self, old, new):
            # TVM >= 0.26 keys the remap by the Var, older versions by its ``vid``
            self.set_var_remap(adapter().var_remap_key(old), new)

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.GlobalVar) and call.op in self.wide):
                return call
            func = self.mod_[call.op]
            for param, arg in zip(func.params, call.args):
                if not isinstance(arg, relax.Var):
                    arg = self.builder_.emit(arg)
                self.remap(param, arg)
            for block in func.body.blocks:
                for binding in block.bindings:
                    self.remap(binding.var, self.builder_.emit(self.visit_expr(binding.value)))
            return self.visit_expr(func.body.body)

    @tvm.transform.module_pass(opt_level=0, name="SplitWideFusions")
    def pass_(mod, _ctx):
        wide = {gv for gv, f in mod.functions.items() if isinstance(f, relax.Function)
                and f.attrs is not None and "Primitive" in f.attrs and fused_buffer_count(f) > max_buffers}
        if not wide:
            return mod
        unfuse = Unfuse(mod, wide)
        for gv, f in mod.functions.items():
            if isinstance(f, relax.Function) and gv not in wide:
                unfuse.builder_.update_func(gv, unfuse.visit_expr(f))
        # the dissolved groups are now unreferenced private functions
        return relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(unfuse.builder_.get()))

    return pass_


def split_wide_concats(max_buffers: int):
    """A module pass: ``concat`` of more than ``max_buffers - 1`` tensors (one kernel binding every input and the
    output) becomes a tree of concats that each fit. Sliced attention joins 16 head slices at SD v1.5 size."""
    from tvm import relax

    width = max(2, max_buffers - 1)

    def split(mutator, call):
        parts = call.args[0]
        if isinstance(parts, relax.Var):
            parts = mutator.lookup_binding(parts)
        if not isinstance(parts, relax.Tuple) or len(parts.fields) <= width:
            return None
        fields, axis = list(parts.fields), call.attrs.axis
        while len(fields) > width:
            fields = [mutator.builder_.emit(relax.op.concat(fields[i:i + width], axis=axis))
                      if len(fields[i:i + width]) > 1 else fields[i] for i in range(0, len(fields), width)]
        return relax.op.concat(fields, axis=axis)

    return call_rewrite_pass("relax.concat", split, "SplitWideConcats")


def align_storage(multiple: int = 4):
    """A module pass: round every static ``alloc_storage`` size up to ``multiple`` bytes."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Align(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name.endswith("alloc_storage")):
                return call
            shape = call.args[0]
            if not (isinstance(shape, relax.ShapeExpr) and len(shape.values) == 1
                    and isinstance(shape.values[0], tir().IntImm)):
                return call
            n = int(shape.values[0])
            if n % multiple == 0:
                return call
            padded = relax.ShapeExpr([-(-n // multiple) * multiple])
            return relax.Call(call.op, [padded, *call.args[1:]], call.attrs, call.sinfo_args)

    return per_function_pass(Align, "AlignStorage")


def call_rewrite_pass(op_name: str, rewrite, name: str):
    """A module pass that offers every call of the Relax op ``op_name`` (bottom up, after its arguments) to
    ``rewrite(mutator, call)``, which returns the replacement or None to keep the call. ``mutator`` is the
    ``PyExprMutator``: its ``builder_`` emits, its ``lookup_binding`` reads bindings."""
    import tvm
    from tvm import relax

    op = tvm.ir.Op.get(op_name)

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(op):
                return call
            new = rewrite(self, call)
            return call if new is None else new

    return per_function_pass(Rewrite, name)


def per_function_pass(mutator, name: str):
    """A module pass that rewrites every Relax function of the module with ``mutator(mod)``."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def pass_(mod, _ctx):
        rewrite = mutator(mod)
        for gv, f in mod.functions.items():
            if isinstance(f, relax.Function):
                rewrite.builder_.update_func(gv, rewrite.visit_expr(f))
        return rewrite.builder_.get()

    return pass_


def webgpu_pipeline(target, max_storage_buffers: int, rewrites=(), schedule_rules=None):
    """TVM's generic GPU Relax pipeline with ``split_wide_fusions`` and ``align_storage`` (see module doc);
    ``rewrites`` (module passes, e.g. pipeline.gpu_kernels') run first, before legalization; ``schedule_rules``
    (dlight rules), when given, replace TVM's default list."""
    import tvm
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    legalize = list(gpu.legalize_passes(target))
    if schedule_rules is not None:
        at = next(i for i, p in enumerate(legalize) if p.info.name == "ApplyDefaultSchedule")
        legalize[at] = dlight().ApplyDefaultSchedule(*schedule_rules)
    fuse_at = next(i for i, p in enumerate(legalize) if p.info.name == "FuseOps")
    legalize.insert(fuse_at + 1, split_wide_fusions(max_storage_buffers))
    finalize = list(gpu.finalize_passes(target))
    plan_at = next(i for i, p in enumerate(finalize) if p.info.name == "StaticPlanBlockMemory")
    finalize.insert(plan_at + 1, align_storage())
    passes = [*rewrites, split_wide_concats(max_storage_buffers)] + gpu.library_dispatch_passes(target) + legalize + gpu.dataflow_lower_passes(target) + finalize

    @tvm.transform.module_pass(opt_level=0, name="WebsdWebGPUPipeline")
    def pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


# --- what a WebGPU build contains -------------------------------------------------------------------------------


def webgpu_source(executable: Any) -> str:
    """The WGSL of every kernel of a ``tvm.compile`` result (the device modules' source)."""
    seen, out, stack = set(), [], [executable.mod]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if adapter().module_kind(m) == "webgpu":
            out.append(adapter().module_source(m))
        stack.extend(adapter().imported_modules(m))
    return "\n".join(out)


def launch_grids(mod) -> dict[str, tuple[int, int, int]]:
    """Per PrimFunc of a scheduled module: its static ``blockIdx`` extents (x, y, z); dynamic ones are left out."""
    T = tir()
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

    T = tir()
    estimate = adapter().estimate_tir_flops
    costs = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, T.PrimFunc):
            continue
        buffers = list(func.buffer_map.values()) if hasattr(func, "buffer_map") else \
            [p for p in func.params if getattr(p, "shape", None) is not None]
        nbytes = 0
        for buf in buffers:
            if all(isinstance(s, T.IntImm) for s in buf.shape):
                n = 1
                for s in buf.shape:
                    n *= int(s)
                nbytes += n * tvm.DataType(str(buf.dtype)).bits // 8
        try:
            flops = int(estimate(tvm.IRModule({"main": func})))
        except Exception:  # noqa: BLE001 - an estimate we cannot make is left out, not guessed
            flops = -1
        name = func.attrs["global_symbol"] if func.attrs is not None and "global_symbol" in func.attrs \
            else gv.name_hint
        costs[str(name)] = {"flops": flops, "bytes": nbytes}
    return costs
