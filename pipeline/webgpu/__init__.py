"""The WebGPU compiler: a Relax module -> a WebGPU build that fits the browser's limits.

  build.py       the target, THE pass list (TVM's generic GPU pipeline with ours), lowering, codegen, the check
  passes.py      our Relax passes that make a module fit WebGPU (wide concats and fusions, storage alignment,
                 embedding casts) and the helpers Relax rewrites are made with
  kernels.py     rewrites and schedule rules for fast kernels (group norm, split-K matmul/conv, matmul tiling)
  limits.py      WebGPU limits profiles, per-kernel measurement and the build-time check
  inspection.py  what a build contains: WGSL, launch grids, kernel costs, bound buffers and their bytes

Everything TVM-version-specific goes through pipeline.toolchain.tvm_api.
"""
