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
    # blocks shrink (halving the longer side) until the grid has this many workgroups (one subgroup each): a big
    # block reuses each load more, a small one fills more of the GPU (1: never shrink)
    enough_workgroups: int = 1

    def requires(self) -> dict:
        """The manifest's ``requires`` of a variant built for this profile."""
        return {"features": [FEATURE, "shader-f16"], "subgroup_size": self.subgroup_size,
                "subgroup_matrix_configs": [{"componentType": self.component, "resultComponentType": self.result,
                                             "M": self.m, "N": self.n, "K": self.k}]}


# Measured: the H200 (driver 580.159.04, npm webgpu 0.6.2, toggle allow_unsafe_apis) lists f16 x f16 -> f32 at
# 16x16x16 among its configs, subgroup size 32; lavapipe from Mesa 26 (setup.sh's .venv/lavapipe-sm) lists only
# 8x8x8, subgroup size 8, which is what CI checks the kernels' arithmetic with.
PROFILES = {
    # 132 SMs of up to 64 warps each: 1024 one-warp workgroups is ~8 per SM (a guess until the H200 measures it)
    "nvidia": MatrixProfile("f16", "f32", 16, 16, 16, 32, enough_workgroups=1024),
    "lavapipe": MatrixProfile("f16", "f32", 8, 8, 8, 8),
}

