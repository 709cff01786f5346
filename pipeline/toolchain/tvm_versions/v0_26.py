"""TVM API adapter for v0.26 and v0.27 (the ``apache-tvm`` wheels and their source builds).

The functions every adapter implements (``pipeline.toolchain.tvm_api`` calls them; ``v0_21.py`` has the same names):
``tir``, ``schedule``, ``schedule_block``, ``scheduled_attr``, ``dlight``, ``estimate_tir_flops``, ``var_name``, ``expr_type``,
``tensor_type``, ``ret_type``, ``var_remap_key``, ``module_kind``, ``module_source``, ``imported_modules``, ``allocated_buffers``,
``cpu_tensor``, ``take``, ``dump_tensor_cache``, ``import_exported_program``, ``script_tir``, ``script_block``,
``script_prim_func``.
"""
from __future__ import annotations

from pathlib import Path

from ...layout import TENSOR_CACHE_JSON  # the name TVM's tensor-cache writer gives the index: the one the page reads


def tir():
    """TVM's TIR namespace: ``tvm.tirx`` (>= 0.24)."""
    import tvm

    return tvm.tirx


def schedule(func):
    """A TIR schedule of ``func`` (``tvm.s_tir.Schedule``)."""
    import tvm

    return tvm.s_tir.Schedule(func)


def schedule_block(sch, name: str):
    return sch.get_sblock(name)


# the PrimFunc attribute that makes TVM's default schedule rules (dlight) leave a function as it is
scheduled_attr = "tirx.is_scheduled"


def dlight():
    """TVM's default GPU schedule rules."""
    from tvm.s_tir import dlight as dl

    return dl


def estimate_tir_flops(func) -> float:
    import tvm

    return tvm.s_tir.analysis.estimate_tir_flops(func)


def var_name(var) -> str:
    return var.name


def expr_type(expr):
    """A Relax expression's type (``.ty``)."""
    return expr.ty


def tensor_type(shape, dtype: str):
    """A Relax tensor type of a static shape."""
    from tvm import relax

    return relax.TensorType(shape, dtype)


def ret_type(func):
    """A Relax function's return type."""
    return func.ret_ty


def call_type_args(call):
    return call.ty_args


def var_remap_key(var):
    """What ``PyExprMutator.set_var_remap`` is keyed by: the Var itself."""
    return var


def module_kind(mod) -> str:
    """A runtime module's kind (``"webgpu"``, ``"llvm"``, ...)."""
    return mod.kind


def module_source(mod) -> str:
    """A runtime module's source (a WebGPU module's WGSL)."""
    return mod.inspect_source()


def imported_modules(mod) -> list:
    """The runtime modules ``mod`` imports (a build's device code hangs off its host module)."""
    return list(mod.imports)


def allocated_buffers(node) -> list:
    """Buffers a TIR statement allocates: an ``SBlock``'s ``alloc_buffers`` or an ``AllocBuffer``'s buffer."""
    T = tir()
    if isinstance(node, T.SBlock):
        return list(node.alloc_buffers)
    if isinstance(node, T.AllocBuffer):
        return [node.buffer]
    return []


def cpu_tensor(array):
    """A TVM tensor on the CPU from a numpy array."""
    import tvm

    return tvm.runtime.tensor(array, tvm.cpu())


def take(table, ids, axis: int, mode: str = "fast"):
    from tvm import relax

    return relax.op.take(table, ids, axis=axis, mode=mode)


def dump_tensor_cache(arrays, out_dir, metadata: dict, shard_cap_mb: int) -> None:
    """TVM's tensor-cache writer, raw encoding: ``tensor-cache.json`` + ``params_shard_<n>.bin``."""
    import contextlib
    import io

    from tvm.contrib import tvmjs

    with contextlib.redirect_stdout(io.StringIO()):  # it prints per-shard progress
        tvmjs.dump_tensor_cache(arrays, str(Path(out_dir)), encode_format="raw", meta_data=metadata,
                                shard_cap_mb=shard_cap_mb, show_progress=False)


def import_exported_program(ep, converters=None):
    """torch ``ExportedProgram`` -> Relax module (weights as inputs after ``num_input`` user inputs);
    ``converters``: extra ``{aten name: convert(node, importer)}``."""
    from tvm.relax.frontend.torch import from_exported_program

    return from_exported_program(ep, keep_params_as_input=True, unwrap_unit_return_tuple=True,
                                 custom_convert_map=dict(converters or {}))


def script_tir():
    """TVMScript's TIR dialect (``tvm.script.tirx``)."""
    from tvm.script import tirx

    return tirx


def script_block():
    """TVMScript's block statement (``T.sblock``)."""
    return script_tir().sblock


def script_prim_func():
    """The TVMScript decorator that parses a function with blocks (schedulable TIR) into a PrimFunc."""
    return script_tir().prim_func(s_tir=True)
