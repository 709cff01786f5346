"""TVM API adapter for v0.21 (source builds only: no wheel exists).

Same functions as ``v0_26.py``. What differs (shared/TVM-0.21.md, and what building the models found):

- names: ``tvm.tir`` not ``tvm.tirx``, ``tvm.tir.Schedule``/``get_block`` and ``tvm.dlight`` (not ``tvm.s_tir``),
  ``tir.is_scheduled``, ``name_hint``, ``struct_info``/``ret_struct_info``, ``tvm.nd.array``, ``type_key``,
  ``imported_modules``/``get_source`` on runtime modules, ``relax.op.take`` without ``mode``;
- the tensor-cache writer is ``dump_ndarray_cache`` and names its index ``ndarray-cache.json``;
- the ExportedProgram importer was tested with torch 2.7. Against torch 2.13's graphs it lacks converters, does not
  promote mixed dtypes in binary ops, makes ``255 - x`` an int32 constant, looks non-persistent buffers (CLIP's
  ``position_ids``) up in ``state_dict``, reads input shapes from ``tensor_meta`` (which a program loaded with
  ``torch.export.load`` lacks) and copies every weight through DLPack (which refuses the traces' zero-stride
  stand-ins). ``import_exported_program`` handles each through the importer's public extension points: a subclass
  of ``ExportedProgramImporter`` (v0.21's ``from_exported_program`` takes no custom converter map) and a view of
  the program (``_ProgramView``). Every converted node is checked against torch's recorded shape and dtype.
"""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import WebsdError
from ...layout import TENSOR_CACHE_JSON  # what this project names the index, whatever TVM's writer calls it

_WRITER_JSON = "ndarray-cache.json"  # v0.21's dump_ndarray_cache (same record schema)


def tir():
    import tvm

    return tvm.tir


def schedule(func):
    import tvm

    return tvm.tir.Schedule(func)


def schedule_block(sch, name: str):
    return sch.get_block(name)


scheduled_attr = "tir.is_scheduled"


def dlight():
    from tvm import dlight as dl

    return dl


def estimate_tir_flops(func) -> float:
    import tvm

    return tvm.tir.analysis.estimate_tir_flops(func)


def var_name(var) -> str:
    return var.name_hint


def expr_type(expr):
    return expr.struct_info


def tensor_type(shape, dtype: str):
    """A Relax tensor struct info of a static shape (``relax.TensorType`` means another thing in v0.21)."""
    from tvm import relax

    return relax.TensorStructInfo(shape, dtype)


def ret_type(func):
    return func.ret_struct_info


def call_type_args(call):
    return call.sinfo_args


def var_remap_key(var):
    """v0.21's ``PyExprMutator.set_var_remap`` is keyed by the Var's ``vid``."""
    return var.vid


def module_kind(mod) -> str:
    return mod.type_key


def module_source(mod) -> str:
    return mod.get_source()


def imported_modules(mod) -> list:
    return list(mod.imported_modules)


def allocated_buffers(node) -> list:
    """Buffers a TIR statement allocates: a ``Block``'s ``alloc_buffers`` or the buffer a ``DeclBuffer`` declares
    (v0.21 lowers allocations to ``Allocate`` + ``DeclBuffer``)."""
    T = tir()
    if isinstance(node, T.Block):
        return list(node.alloc_buffers)
    if isinstance(node, T.DeclBuffer):
        return [node.buffer]
    return []


def cpu_tensor(array):
    import tvm

    return tvm.nd.array(array, tvm.cpu())


def take(table, ids, axis: int, mode: str = "fast"):
    """``relax.op.take`` (no ``mode`` before v0.22: out-of-range ids are not defined, as with "fast")."""
    from tvm import relax

    return relax.op.take(table, ids, axis=axis)


def dump_tensor_cache(arrays, out_dir, metadata: dict, shard_cap_mb: int) -> None:
    """``dump_ndarray_cache`` (raw), its ``ndarray-cache.json`` renamed to ``tensor-cache.json``."""
    import contextlib
    import io

    from tvm.contrib import tvmjs

    out_dir = Path(out_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        tvmjs.dump_ndarray_cache(arrays, str(out_dir), encode_format="raw", meta_data=metadata,
                                 shard_cap_mb=shard_cap_mb, show_progress=False)
    os.replace(out_dir / _WRITER_JSON, out_dir / TENSOR_CACHE_JSON)


# --- the importer -----------------------------------------------------------------------------------------------

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_INTS = ("bool", "uint8", "int8", "int16", "int32", "int64")


def script_tir():
    """TVMScript's TIR dialect (``tvm.script.tir``; ``tirx`` from v0.24)."""
    from tvm.script import tir

    return tir


def script_block():
    """TVMScript's block statement (``T.block``; ``T.sblock`` from v0.24)."""
    return script_tir().block


def script_prim_func():
    """The TVMScript decorator that parses a function with blocks into a PrimFunc (v0.26: ``s_tir=True``)."""
    return script_tir().prim_func


def promoted_dtype(a: str, b: str) -> str:
    """PyTorch's promotion of two tensor dtypes (float over int over bool, then the wider one)."""
    if a == b:
        return a
    order = _INTS + _FLOATS
    a_float, b_float = a in _FLOATS, b in _FLOATS
    if a_float != b_float:
        return a if a_float else b
    return a if order.index(a) > order.index(b) else b


def _shape_checked(op: str, convert):
    """A converter that fails at the first node whose Relax shape or dtype differs from what torch recorded for it
    (``node.meta["val"]``), so a converter that goes wrong is named here and not in some later, unrelated op."""
    import torch
    from tvm import relax, tir

    def checked(node):
        out = convert(node)
        val = node.meta.get("val")
        info = out.struct_info if isinstance(out, relax.Expr) else None
        if not (isinstance(val, torch.Tensor) and isinstance(info, relax.TensorStructInfo) and info.shape is not None
                and all(isinstance(d, int) for d in val.shape)):
            return out  # not a tensor, or a symbolic shape: nothing static to compare
        shape = [int(d) if isinstance(d, tir.IntImm) else d for d in info.shape.values]
        dtype = str(val.dtype).removeprefix("torch.")
        if shape != list(val.shape) or info.dtype != dtype:
            raise WebsdError(f"TVM v0.21's importer converted {op} (node {node.name}) to {shape} {info.dtype}, "
                             f"where torch has {list(val.shape)} {dtype}; fix its converter in "
                             f"pipeline/toolchain/tvm_versions/v0_21.py")
        return out

    return checked


def importer_class(converters=None):
    """v0.21's ``ExportedProgramImporter`` with the converters torch 2.13's graphs need, and ``converters``
    (``{aten name: convert(node, importer)}``, v0.26's ``custom_convert_map`` form)."""
    from tvm import relax
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    class Importer(ExportedProgramImporter):
        def create_input_vars(self, exported_program):
            # v0.21 reads a user input's shape from its placeholder's "tensor_meta", which a program saved by
            # torch.export.save and loaded back does not keep (only "val"): without it the input silently took
            # the shape of the input spec before it (a weight's), and every op after it was mis-shaped
            import torch
            from torch.fx.passes.shape_prop import _extract_tensor_metadata

            for node in exported_program.graph.find_nodes(op="placeholder"):
                val = node.meta.get("val")
                if "tensor_meta" not in node.meta and isinstance(val, torch.Tensor):
                    node.meta["tensor_meta"] = _extract_tensor_metadata(val)
            return super().create_input_vars(exported_program)

        def create_convert_map(self):
            return {name: _shape_checked(name, convert) for name, convert in self._converters().items()}

        def _converters(self):
            table = super().create_convert_map()
            table.update({
                # a shape/dtype assertion torch.export records; it computes nothing
                "_assert_tensor_metadata.default": lambda node: None,
                "alias.default": lambda node: self.env[node.args[0]],
                "to.device": self._to_device,
                "rsub.Scalar": self._rsub_scalar,
                "where.ScalarOther": self._where_scalar_other,
                "where.ScalarSelf": self._where_scalar_self,
            })
            table.update({name: (lambda node, c=convert: c(node, self)) for name, convert in (converters or {}).items()})
            return table

        def _to_device(self, node):
            # to.device(self, device, dtype, non_blocking, copy, memory_format): one device here, so only dtype
            x = self.env[node.args[0]]
            dtype = node.args[2] if len(node.args) > 2 else node.kwargs.get("dtype")
            if dtype is None:
                return x
            return self.block_builder.emit(relax.op.astype(x, self._convert_data_type(dtype, self.env)))

        def _rsub_scalar(self, node):
            # other - alpha * x; v0.21 made a Python int `other` an int32 constant beside a float tensor
            x, other = self.env[node.args[0]], node.args[1]
            alpha = node.args[2] if len(node.args) > 2 else node.kwargs.get("alpha", 1)
            dtype = x.struct_info.dtype
            if isinstance(other, float) and dtype not in _FLOATS:
                x, dtype = self.block_builder.emit(relax.op.astype(x, "float32")), "float32"
            if alpha != 1:
                x = self.block_builder.emit(relax.op.multiply(x, relax.const(alpha, dtype)))
            return self.block_builder.emit(relax.op.subtract(relax.const(other, dtype), x))

        def _where_scalar_other(self, node):
            cond, x, other = self.env[node.args[0]], self.env[node.args[1]], node.args[2]
            return self.block_builder.emit(relax.op.where(cond, x, relax.const(other, x.struct_info.dtype)))

        def _where_scalar_self(self, node):
            cond, value, y = self.env[node.args[0]], node.args[1], self.env[node.args[2]]
            return self.block_builder.emit(relax.op.where(cond, relax.const(value, y.struct_info.dtype), y))

        def _binary_op(self, relax_op, intrinsic_op):
            convert = super()._binary_op(relax_op, intrinsic_op)

            def promoting(node):
                lhs, rhs = self.retrieve_args(node)[:2]
                if isinstance(lhs, relax.Expr) and isinstance(rhs, relax.Expr):
                    lt, rt = lhs.struct_info, rhs.struct_info
                    if isinstance(lt, relax.TensorStructInfo) and isinstance(rt, relax.TensorStructInfo) \
                            and lt.dtype != rt.dtype:
                        dtype = promoted_dtype(lt.dtype, rt.dtype)
                        if lt.dtype != dtype:
                            lhs = self.block_builder.emit(relax.op.astype(lhs, dtype))
                        if rt.dtype != dtype:
                            rhs = self.block_builder.emit(relax.op.astype(rhs, dtype))
                        return self.block_builder.emit(relax_op(lhs, rhs))
                return convert(node)

            return promoting

    return Importer


class _ProgramView:
    """What v0.21's importer reads of an ExportedProgram, adjusted for torch 2.13:

    - ``state_dict`` also holds the non-persistent buffers (CLIP's ``position_ids``): torch keeps those in
      ``constants``, and v0.21's ``create_input_vars`` looks every BUFFER input up in ``state_dict``;
    - ``named_parameters`` is empty: v0.21 copies every weight into the module's ``params`` attribute through
      DLPack, which refuses the traced programs' weights (zero-stride placeholders, ``pipeline/model/trace.py``: the real
      ones go to the tensor cache). Nothing reads that attribute here (``compile`` detaches and drops it).
    """

    def __init__(self, ep):
        self._ep = ep
        self.state_dict = {**ep.constants, **ep.state_dict}

    def named_parameters(self):
        return iter(())

    def __getattr__(self, name):
        return getattr(self._ep, name)


def import_exported_program(ep, converters=None):
    """torch ``ExportedProgram`` -> Relax module, as v0.26's ``from_exported_program(ep, keep_params_as_input=True,
    unwrap_unit_return_tuple=True, custom_convert_map=converters)`` gives it, but with an empty ``params``
    attribute (see ``_ProgramView``)."""
    return importer_class(converters)().from_exported_program(_ProgramView(ep), keep_params_as_input=True,
                                                    unwrap_unit_return_tuple=True, no_bind_return_tuple=False)
