"""Matmuls, convolutions and attention on WebGPU's subgroup matrices (Dawn's
``chromium-experimental-subgroup-matrix``: NVIDIA's tensor cores through Vulkan cooperative matrices, Apple's
simdgroup matrices), for the ``subgroup-matrix`` variant of a site.

TVM cannot emit these WGSL builtins, so each such kernel comes in two halves that share one name and one launch:

  * a **twin** PrimFunc (``gemm_twin``): the same matmul written as plain TIR with the grid and workgroup of the
    real kernel. TVM compiles and launches it like any kernel, so the .wasm holds its bindings, uniform and grid,
    and the llvm build that ``verify_*`` runs computes the same result on the CPU;
  * its **WGSL override** (``gemm_wgsl``): the real kernel, written here around TVM's own header for the twin (its
    bindings and uniform, copied verbatim), that the page swaps in for the twin's shader when the adapter offers the
    feature (manifest ``variants[].submodels[*].kernels``).

Each subgroup computes a block of the output on subgroup matrices (float16 in, float32 accumulation): one per
workgroup, or the profile's ``conv_subgroups`` (``gemm_subgroups``) sharing the workgroup's gather of the input
(copies of the matmul's tiles). The
shapes (m, n, k) and the subgroup size are an adapter class's (``PROFILES``): a kernel built for one does not run on
another, which is why the manifest lists the config a variant needs.

A kind of kernel is one module and one ``KINDS`` line: ``gemm`` (matmuls), ``conv`` (convolutions as implicit
GEMMs), ``attention`` (two-pass attention); ``profiles`` and ``wgsl`` are what they share.
"""
from __future__ import annotations

from ...errors import WebsdError
from ...toolchain import tvm_api
from . import attention, conv, gemm
from .attention import Attention, attention_grid, attention_twin, attention_wgsl, rewrite_attention, tiling, tilings
from .conv import (Conv, conv_chunk, conv_layout, conv_splits, conv_staged, conv_te, conv_twin, conv_wgsl,
                   parse_conv_name, rewrite_cast_convs, rewrite_convs)
from .gemm import (Gemm, block_of, gemm_depth, gemm_layout, gemm_te, gemm_twin, gemm_wgsl, grid, padded_rows,
                   parse_name, rewrite_matmuls)
from .profiles import FEATURE, PROFILES, MatrixProfile
from .wgsl import split_kernels, twin_header

# twin name prefix -> (its name parsed back, the override of a built twin: (parsed, profile, twin's WGSL) -> WGSL)
KINDS = {
    "sgmm_": (gemm.parse_name, gemm.override),
    "sgconv_": (conv.parse_conv_name, conv.override),
    "sgattn_": (attention.parse_name, attention.override),
}


def rewrites(profile: MatrixProfile, max_binding: int) -> list:
    """The module passes of the subgroup-matrix kernel set (pipeline.webgpu.build runs them first); no twin binds
    more than ``max_binding`` bytes (the limits profile's maxStorageBufferBindingSize)."""
    from tvm import relax

    return [rewrite_matmuls(profile, max_binding), rewrite_cast_convs(profile, max_binding),
            relax.transform.DeadCodeElimination(), rewrite_convs(profile, max_binding),
            rewrite_attention(profile, max_binding)]


def overrides(executable, lowered, profile: MatrixProfile) -> dict[str, str]:
    """{twin kernel entry point: its WGSL override} for every twin in a built module (``lowered`` is the module the
    pass list produced, ``executable`` its ``tvm.compile``)."""
    from .. import inspection

    T = tvm_api.tir()
    sources = split_kernels(inspection.webgpu_source(executable))
    out = {}
    for gv, func in lowered.functions.items():
        kind = next((k for k in KINDS if gv.name_hint.startswith(k)), None)
        if not isinstance(func, T.PrimFunc) or kind is None:
            continue
        entry = f"{gv.name_hint}_kernel"
        if entry not in sources:
            raise WebsdError(f"subgroup-matrix: the build has no WGSL for {entry}; TVM renamed its kernels")
        parse, override = KINDS[kind]
        out[entry] = override(parse(gv.name_hint), profile, sources[entry])
    return out


__all__ = ["FEATURE", "KINDS", "PROFILES", "Attention", "Conv", "Gemm", "MatrixProfile", "attention_grid",
           "attention_twin", "attention_wgsl", "block_of", "conv_chunk", "conv_layout", "conv_splits", "conv_staged",
           "conv_te", "conv_twin", "conv_wgsl", "gemm_depth", "gemm_layout", "gemm_te", "gemm_twin", "gemm_wgsl",
           "grid", "overrides", "padded_rows", "parse_conv_name", "parse_name", "rewrite_attention",
           "rewrite_cast_convs", "rewrite_convs", "rewrite_matmuls", "rewrites", "split_kernels", "tiling", "tilings",
           "twin_header"]
