"""Stage ``verify_<sub>``: the CPU (llvm) build, fed the shipped tensor cache, against PyTorch.

Both run the same random inputs (seeded by ``model.seed``, drawn apart from the trace's example inputs); PyTorch
runs the submodel's wrapper (the module that was traced) in float32. The report (``Layout.verify_report(sub)``) holds the max abs error, also
normalized by the output's range (255 for the VAE's 0..255 pixels, 1 otherwise), which must stay within
``TOLERANCE[dtype]``. A failed check writes ``<sub>.failed.json`` instead (removing an earlier report) and raises.

CPU builds of full-size models are unscheduled and very slow (SD v1.5 UNet: > 18 min per call); verify is
meant for small models.
"""
from __future__ import annotations

import time
from pathlib import Path

from .. import models, submodels
from ..config import Config
from ..errors import WebsdError
from ..fsutil import write_json
from ..layout import Layout
from ..submodels import code
from ..toolchain import tvm_api
from . import compile as compile_stage
from . import hf, lora, params, shard, verify_policy

CONFIG_KEYS = ("model.seed",)  # model.dtype is in the output path
# normalized max abs error allowed per model.dtype (float16 keeps ~3 digits; guidance 7.5 amplifies the UNet's)
TOLERANCE = {"float32": 1e-4, "float16": 5e-2}
# output value range per submodel (error is reported relative to it)
OUTPUT_RANGE = {"vae": 255.0}


def inputs(cfg: Config, sub: str) -> list[Path]:
    """The trace's parameter list, compile's llvm build, the tensor cache and the weights."""
    return [Layout.from_config(cfg).trace_params(sub), compile_stage.paths(cfg, sub)["llvm"],
            *shard.outputs(cfg, sub), *hf.weight_files(cfg, submodels.get(sub).component),
            *lora.files(cfg, submodels.get(sub).component)]


def fingerprint(cfg: Config, sub: str) -> list:
    """The LoRA scales (PyTorch's reference fuses them as shard did)."""
    return shard.fingerprint(cfg, sub)


def outputs(cfg: Config, sub: str) -> list[Path]:
    return [Layout.from_config(cfg).verify_report(sub)]


def run(cfg: Config, sub: str) -> dict:
    import numpy as np
    import torch

    layout = Layout.from_config(cfg)
    so = compile_stage.paths(cfg, sub)["llvm"]
    params_dir = layout.params_dir(sub)
    if not so.is_file():
        if not verify_policy.cpu_verification(cfg):  # compile builds the llvm module only for verified models
            raise WebsdError(f"CPU verification is off for model {cfg.model.name!r} (model.verify="
                             f"{cfg.model.verify}), so compile_{sub} made no CPU build to check; run with "
                             f"model.verify=on")
        raise WebsdError(f"no CPU build of {sub} at {so}; run compile_{sub} first")
    if not layout.tensor_cache_index(sub).is_file():
        raise WebsdError(f"no tensor cache for {sub} at {params_dir}; run shard_{sub} first")
    sub_module = code.entry(sub)
    inputs = sub_module.inputs(models.dims(cfg), torch.Generator().manual_seed(cfg.model.seed + 1))

    start = time.perf_counter()
    with torch.no_grad():
        expected = sub_module.wrapper(cfg)(*inputs.values()).numpy()
    torch_s = time.perf_counter() - start

    cache = shard.read_cache(params_dir)
    names = [p["name"] for p in params.traced_params(cfg, sub)["params"]]
    if list(cache) != names:
        raise WebsdError(f"tensor cache {params_dir} does not list {sub}'s parameters in call order; "
                         f"re-run shard_{sub}")
    weights = [tvm_api.cpu_tensor(np.ascontiguousarray(cache[n])) for n in names]
    vm = tvm_api.cpu_vm(so)
    start = time.perf_counter()
    actual = vm[sub](*[tvm_api.cpu_tensor(v.numpy()) for v in inputs.values()], weights).numpy()
    tvm_s = time.perf_counter() - start

    if actual.shape != expected.shape:
        raise WebsdError(f"{sub}: TVM output shape {actual.shape} != PyTorch {expected.shape}; re-run trace/compile")
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    scale = OUTPUT_RANGE.get(sub, 1.0)
    tol = TOLERANCE[cfg.model.dtype]
    report = {
        "submodel": sub, "model": cfg.model.name, "dtype": cfg.model.dtype, "seed": cfg.model.seed + 1,
        "output_shape": list(expected.shape), "max_abs_error": err, "output_range": scale,
        "max_abs_error_normalized": err / scale, "max_abs_expected": float(np.max(np.abs(expected))),
        "tolerance": tol, "passed": bool(err / scale <= tol),
        "seconds": {"torch": round(torch_s, 3), "tvm_llvm": round(tvm_s, 3)},
    }
    target = layout.verify_report(sub)
    if not report["passed"]:
        failed = target.with_name(f"{sub}.failed.json")
        write_json(failed, report)
        target.unlink(missing_ok=True)  # an earlier passing report would describe other artifacts
        raise WebsdError(f"{sub}: TVM (llvm) differs from PyTorch by {err / scale:.3g} (normalized) > {tol}; "
                         f"see {failed}")
    target.with_name(f"{sub}.failed.json").unlink(missing_ok=True)
    write_json(target, report)
    return report
