"""The WebGPU build of a Relax module: the target, THE pass list (TVM's generic GPU pipeline with our passes, kernel
rewrites and schedule rules), lowering, codegen, and the check of the result against the WebGPU limits.

    lowered, executable, use = build(mod, "unet", "default", param_names, "dlight")
"""
from __future__ import annotations

from ..errors import WebsdError
from ..toolchain import tvm_api
from . import flash_attention, inspection, kernels, limits, passes
from . import subgroup_matrix as subgroup_matrix_pass


def target():
    """WebGPU kernels with a wasm32 host (the page's tvmjs runtime)."""
    import tvm

    return tvm.target.Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})


def pass_list(tgt, limits_profile: str = "default", matmul: str = "dlight", subgroup_matrix=None):
    """THE WebGPU pass list, as one module pass: TVM's generic GPU Relax pipeline (``relax.backend.gpu_generic``)
    with ours (pipeline.webgpu.passes, pipeline.webgpu.kernels):
      * first, single-head attention (the VAE's) as two matmuls (``flash_attention.split_single_head_attention``);
      * then, with a subgroup-matrix profile (the ``subgroup-matrix`` kernel set): matmuls, convolutions and
        attention to their twin kernels (pipeline.webgpu.subgroup_matrix);
      * before legalization: the kernel rewrites (``kernels.rewrites()``), fused attention
        (``flash_attention.fuse_attention()``), then ``split_wide_concats``;
      * dlight's schedule rules replaced by ``kernels.schedule_rules(matmul)`` (``webgpu.matmul``);
      * right after FuseOps: ``split_wide_fusions``, so no kernel binds more storage buffers than the limits
        profile allows;
      * right after memory planning: ``align_storage``."""
    import tvm
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    max_buffers = limits.profile(limits_profile)["maxStorageBuffersPerShaderStage"]
    legalize = list(gpu.legalize_passes(tgt))
    at = next(i for i, p in enumerate(legalize) if p.info.name == "ApplyDefaultSchedule")
    legalize[at] = tvm_api.dlight().ApplyDefaultSchedule(*kernels.schedule_rules(matmul))
    fuse_at = next(i for i, p in enumerate(legalize) if p.info.name == "FuseOps")
    legalize.insert(fuse_at + 1, passes.split_wide_fusions(max_buffers))
    finalize = list(gpu.finalize_passes(tgt))
    plan_at = next(i for i, p in enumerate(finalize) if p.info.name == "StaticPlanBlockMemory")
    finalize.insert(plan_at + 1, passes.align_storage())
    binding = limits.profile(limits_profile)["maxStorageBufferBindingSize"]
    tensor_cores = subgroup_matrix_pass.rewrites(subgroup_matrix, binding) if subgroup_matrix else []
    ordered = [flash_attention.split_single_head_attention(binding), *tensor_cores, *kernels.rewrites(),
               flash_attention.fuse_attention(), passes.split_wide_concats(max_buffers),
               *gpu.library_dispatch_passes(tgt),
               *legalize, *gpu.dataflow_lower_passes(tgt), *finalize]

    @tvm.transform.module_pass(opt_level=0, name="WebsdWebGPUPipeline")
    def run(mod, _ctx):
        with tgt:
            return tvm.transform.Sequential(ordered)(mod)

    return run


def lower(mod, limits_profile: str = "default", matmul: str = "dlight", subgroup_matrix=None):
    """``(lowered, target)``: the pass list run by us (tvm.compile would run TVM's)."""
    tgt = target()
    with tgt:
        return pass_list(tgt, limits_profile, matmul, subgroup_matrix)(mod), tgt


def build(mod, sub: str, limits_profile: str, param_names: list[str] = (), matmul: str = "dlight",
          subgroup_matrix=None):
    """Lower and build the WebGPU module and check it against the limits profile: ``(lowered, executable, use)``,
    or a one-line WebsdError naming the kernel or buffer over a limit. ``subgroup_matrix``: a MatrixProfile to
    build the subgroup-matrix kernel set for (None: the default kernels)."""
    import tvm

    lowered, tgt = lower(mod, limits_profile, matmul, subgroup_matrix)
    aliased = inspection.aliased_kernel_calls(lowered)
    if aliased:
        raise WebsdError(f"{sub}: kernel call {aliased[0]} would bind one buffer twice, which WebGPU forbids; "
                         f"change pipeline/submodels/{sub}.py so that op gets distinct tensors")
    executable = tvm.compile(lowered, tgt, relax_pipeline=None)
    use = inspection.webgpu_use(lowered, executable, sub, list(param_names))
    limits.check(sub, use, limits_profile)
    return lowered, executable, use


def single_kernel(func, name: str, default_schedule: bool = False) -> tuple[str, str, tuple[int, int, int]]:
    """One PrimFunc built for WebGPU on its own (kernel tests and benchmarks): ``(its kernel's WGSL, the entry point,
    its launch grid)``. ``default_schedule``: an unscheduled function gets the compile's dlight rules first, so the
    kernel is the one a site would have."""
    import tvm

    mod = tvm.IRModule({name: func.with_attr("global_symbol", name)})
    tgt = target()
    if default_schedule:
        with tgt:
            mod = tvm_api.dlight().ApplyDefaultSchedule(*kernels.schedule_rules())(mod)
    entry = f"{name}_kernel"
    wgsl = subgroup_matrix_pass.split_kernels(inspection.webgpu_source(tvm.compile(mod, target=tgt)))[entry]
    return wgsl, entry, inspection.launch_grids(mod)[name]
