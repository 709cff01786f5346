"""The one seam to TVM's Python API: everything version-specific that the stages use goes through here.

TVM renames things between releases (``tvm.tir`` -> ``tvm.tirx`` in v0.24, ``name_hint`` -> ``name``,
``struct_info`` -> ``ty``; shared/TVM-0.21.md lists more). The version-specific calls are made by an adapter, one
module per TVM API generation in ``pipeline/toolchain/tvm_versions/`` (v0_21, v0_26), chosen by the imported
TVM's version.

The WebGPU compiler built on it (passes, pass list, schedules, limits, inspection) is pipeline.webgpu.
"""
from __future__ import annotations

from . import tvm_versions


def adapter():
    """The version adapter (pipeline/toolchain/tvm_versions) of the TVM this process imports (tvm_build's
    selection)."""
    import tvm

    return tvm_versions.select(tvm.__version__)


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


def call_type_args(call):
    """A Relax call's type arguments, to rebuild it with other arguments (``ty_args``; ``sinfo_args`` before v0.26)."""
    return adapter().call_type_args(call)


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


def import_exported_program(ep, converters=None):
    """A torch ``ExportedProgram`` as a Relax module (``main``: user inputs, then the weights; ``num_input``);
    ``converters``: extra ``{aten name: convert(node, importer)}`` for ops of ours (pipeline.webgpu.flash_attention)."""
    return adapter().import_exported_program(ep, converters)


def script_tir():
    """TVMScript's TIR dialect, the ``T`` of ``T.prim_func`` (``tvm.script.tirx``; ``tvm.script.tir`` before v0.24)."""
    return adapter().script_tir()


def script_block():
    """TVMScript's block statement (``T.sblock``; ``T.block`` before v0.24)."""
    return adapter().script_block()


def script_prim_func():
    """The TVMScript decorator (``T.prim_func``) for a function with blocks; the parser needs it written as one."""
    return adapter().script_prim_func()


def estimate_tir_flops(mod) -> float:
    """TVM's FLOP estimate of a TIR module (``tvm.s_tir.analysis`` from v0.24, ``tvm.tir.analysis`` before)."""
    return adapter().estimate_tir_flops(mod)


def var_remap_key(var):
    """The key a ``PyExprMutator`` remaps a Relax variable by: the Var (>= 0.26) or its ``vid``."""
    return adapter().var_remap_key(var)


def module_kind(mod) -> str:
    """A runtime module's kind (``webgpu``, ``llvm``, ...)."""
    return adapter().module_kind(mod)


def module_source(mod) -> str:
    """A runtime module's source (``inspect_source``; ``get_source`` before v0.26)."""
    return adapter().module_source(mod)


def imported_modules(mod) -> list:
    """The modules a runtime module imports (``imports``; ``imported_modules`` before v0.26)."""
    return adapter().imported_modules(mod)
