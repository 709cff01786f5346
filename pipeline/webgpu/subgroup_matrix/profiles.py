"""What an adapter class offers of WebGPU's subgroup matrices (``PROFILES``), and the feature that names them."""
from __future__ import annotations

from dataclasses import dataclass

FEATURE = "chromium-experimental-subgroup-matrix"


@dataclass(frozen=True)
class MatrixProfile:
    """What an adapter class offers: one ``adapter.info.subgroupMatrixConfigs`` entry and its subgroup size."""
    component: str  # "f16": the A and B elements
    result: str  # "f32": the accumulator
    m: int
    n: int
    k: int
    subgroup_size: int
    # blocks shrink until the grid has this many workgroups: a big block reuses each load more, a small one fills
    # more of the GPU (1: never shrink)
    enough_workgroups: int = 1
    # subgroups per workgroup of a convolution, each its own output channels, sharing one im2col gather (the
    # gather, not the multiplies, is what a one-subgroup convolution waits on)
    conv_subgroups: int = 1
    # (down, across) subgroups per workgroup of a matmul: (1, 1) is the direct kernel, more the staged one, which
    # shares each load among them through workgroup memory (pipeline/webgpu/subgroup_matrix/gemm.py)
    gemm_subgroups: tuple[int, int] = (1, 1)
    # a convolution's weights copied into workgroup memory with vector loads, as the staged matmul's tiles (False:
    # each subgroup loads its weight matrices straight from storage), in blocks of at least ``conv_staged_rows``
    # rows of result matrices (a shorter block reuses its weight tile too little to pay for the copy)
    conv_staged: bool = False
    conv_staged_rows: int = 1
    # a convolution's block: at most ``conv_cols`` columns of result matrices (pixels), shrunk until the grid has
    # ``conv_workgroups`` workgroups (0: ``enough_workgroups``)
    conv_cols: int = 4
    conv_workgroups: int = 0
    # a convolution's gather of the next chunk loaded into registers while this one multiplies (False: loaded and
    # stored between two barriers, the subgroups idle meanwhile)
    conv_prefetch: bool = False
    # split-k: a convolution's reduction split in parts (Conv.splits) until its grid has this many workgroups
    # (0: never split)
    conv_split_workgroups: int = 0
    # an attention's softmax bookkeeping with the lanes along each query row's keys (consecutive words of workgroup
    # memory) and the row's max and sum reduced by subgroup shuffles (False: one lane per query row, reading the
    # row's keys at the row stride, which lands many lanes on one memory bank)
    attention_by_key: bool = False
    # an attention in one pass over the keys, its accumulators rescaled (through workgroup memory) when a row's
    # running maximum moves, rather than two passes, the first only for the maxima (subgroup_matrix/attention.py)
    attention_one_pass: bool = False

    def requires(self) -> dict:
        """The manifest's ``requires`` of a variant built for this profile."""
        several = (self.conv_subgroups > 1 or self.gemm_subgroups != (1, 1) or self.attention_by_key
                   or self.attention_one_pass)
        features = [FEATURE, "shader-f16", *(["subgroups"] if several else [])]
        return {"features": features, "subgroup_size": self.subgroup_size,
                "subgroup_matrix_configs": [{"componentType": self.component, "resultComponentType": self.result,
                                             "M": self.m, "N": self.n, "K": self.k}]}


# Measured: the H200 (driver 580.159.04, npm webgpu 0.6.2, toggle allow_unsafe_apis) lists f16 x f16 -> f32 at
# 16x16x16 among its configs, subgroup size 32; lavapipe from Mesa 26 (setup.sh's .venv/lavapipe-sm) lists only
# 8x8x8, subgroup size 8, which is what CI checks the kernels' arithmetic with.
PROFILES = {
    # from bench_subgroup_matrix.py --sweep on H100s (benchmarks/results/subgroup-matrix-kernels-nvidia-*h100*): a
    # matmul staged on 2x1 subgroups at 4x4 ran 1.3-1.6x the direct kernel (to 75-80 TFLOP/s), best unshrunk down to
    # 80 workgroups; a convolution on 4 subgroups sharing its gather beat 2 and 1 at every shape, best at blocks of
    # at most 2 columns; with its gather prefetched (1.2-1.7x at the fastest blocks) best at about 256 workgroups,
    # staging its weights from blocks of 2 rows; split-k until 512 workgroups: SD's 8x8 convolutions 2.2-2.7x, its
    # 16x16 ones 1.3x; the softmax bookkeeping by row faster than by key at the fastest tilings; attention in one
    # pass 1.45x two at 4096 tokens (3.29 against 4.78 ms; ...-h100-session15.md)
    "nvidia": MatrixProfile("f16", "f32", 16, 16, 16, 32, enough_workgroups=64, conv_subgroups=4,
                            gemm_subgroups=(2, 1), conv_staged=True, conv_staged_rows=2, conv_cols=2,
                            conv_workgroups=256, conv_prefetch=True, conv_split_workgroups=512,
                            attention_one_pass=True),
    # CI's software driver: its choices exercise every kernel form, not speed
    "lavapipe": MatrixProfile("f16", "f32", 8, 8, 8, 8, conv_subgroups=2, gemm_subgroups=(2, 2), conv_staged=True,
                              attention_by_key=True, attention_one_pass=True, conv_prefetch=True,
                              conv_split_workgroups=8),
}
