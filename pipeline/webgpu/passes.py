"""Relax passes of this project that make a module fit WebGPU, and the helpers that Relax rewrites are built with.

TVM's Relax FuseOps has no bound on kernel arguments (its ``max_function_args`` is wired to 0) and WebGPU has one
(``maxStorageBuffersPerShaderStage``), and WebGPU binds storage buffers in multiples of 4 bytes; so:
  * ``split_wide_concats``: a concat of more tensors than a kernel may bind becomes a tree of concats;
  * ``split_wide_fusions``: a fused group whose kernel would bind more storage buffers than the limits profile
    allows is dissolved back into its separate kernels;
  * ``align_storage``: every storage allocation is rounded up to 4 bytes (a 3-element float16 tensor is 6 bytes);
  * ``gather_before_cast``: an embedding lookup casts the rows it gathers, not the whole table.
Where each runs is the pass list, pipeline.webgpu.build.
"""
from __future__ import annotations

from ..toolchain import tvm_api


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


def _tensor_count(ty) -> int:
    fields = getattr(ty, "fields", None)
    if fields is not None:
        return sum(_tensor_count(f) for f in fields)
    return 1 if hasattr(ty, "dtype") and hasattr(ty, "shape") else 0


def fused_buffer_count(func) -> int:
    """Storage buffers the kernel of a fused Relax group binds: its tensor parameters plus its outputs."""
    return sum(_tensor_count(tvm_api.expr_type(p)) for p in func.params) + _tensor_count(tvm_api.ret_type(func))


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
            self.set_var_remap(tvm_api.var_remap_key(old), new)

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
                    and isinstance(shape.values[0], tvm_api.tir().IntImm)):
                return call
            n = int(shape.values[0])
            if n % multiple == 0:
                return call
            padded = relax.ShapeExpr([-(-n // multiple) * multiple])
            return relax.Call(call.op, [padded, *call.args[1:]], call.attrs, tvm_api.call_type_args(call))

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
