"""Stage verify_<sub>: the llvm build with the shipped tensor cache agrees with PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.model import shard, verify
from pipeline.errors import WebsdError
from pipeline.layout import Layout
from tests.model_build import tiny_f16_clip, tiny_f32, tiny_wide  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # builds the tiny model (once per session)


def test_the_report_states_the_error_the_builds_really_have(tiny_f32):  # noqa: F811
    """Recompute what verify reports, independently: the llvm module with the shipped weights against the
    submodel's torch module on the report's inputs. (verify itself only raises above its tolerance.)"""
    import torch

    from pipeline.model import compile as compile_stage
    from pipeline import models
    from pipeline.submodels import code
    from pipeline.model import params
    from pipeline.toolchain import tvm_api

    for sub in ("clip", "unet", "vae"):
        report = json.loads(Layout.from_config(tiny_f32).verify_report(sub).read_text())
        module = code.entry(sub)
        inputs = module.inputs(models.dims(tiny_f32), torch.Generator().manual_seed(report["seed"]))
        with torch.no_grad():
            expected = module.wrapper(tiny_f32)(*inputs.values()).numpy()
        cache = shard.read_cache(Layout.from_config(tiny_f32).params_dir(sub))
        names = [p["name"] for p in params.traced_params(tiny_f32, sub)["params"]]
        vm = tvm_api.cpu_vm(compile_stage.paths(tiny_f32, sub)["llvm"])
        actual = vm[sub](*[tvm_api.cpu_tensor(v.numpy()) for v in inputs.values()],
                         [tvm_api.cpu_tensor(np.ascontiguousarray(cache[n])) for n in names]).numpy()
        err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
        assert report["max_abs_error"] == pytest.approx(err, rel=1e-6, abs=1e-12), (sub, report, err)
        assert report["max_abs_expected"] > 0 and report["passed"]


def test_tiny_float16_clip_passes_its_tolerance(tiny_f16_clip):  # noqa: F811
    report = json.loads(Layout.from_config(tiny_f16_clip).verify_report("clip").read_text())
    assert report["passed"] and 0 < report["max_abs_error_normalized"] <= verify.TOLERANCE["float16"]


def test_wrong_weights_fail_and_leave_no_passing_report(tiny_f32, monkeypatch):  # noqa: F811
    real_read = shard.read_cache

    def perturbed(params_dir):
        cache = real_read(params_dir)
        first = next(iter(cache))
        cache[first] = cache[first] + np.float32(0.5)
        return cache

    layout = Layout.from_config(tiny_f32)
    saved = layout.verify_report("vae").read_text()
    monkeypatch.setattr(shard, "read_cache", perturbed)
    try:
        with pytest.raises(WebsdError, match="differs from PyTorch"):
            verify.run(tiny_f32, "vae")
        assert not layout.verify_report("vae").exists()
        assert json.loads((layout.verify_report("vae").with_name("vae.failed.json")).read_text())["passed"] is False
    finally:
        layout.verify_report("vae").write_text(saved)
        layout.verify_report("vae").with_name("vae.failed.json").unlink(missing_ok=True)


def test_verifying_a_model_without_cpu_verification_names_the_setting(tmp_path):
    """A local diffusers folder is not verified by default (model.verify=auto), so compile made no llvm build:
    asking for verify_<sub> says which setting turns it on, not "run compile first" (which would not help)."""
    from pipeline.config import load_config

    folder = tmp_path / "my-sd"
    folder.mkdir()
    cfg = load_config(pyproject=None, env={}, cli={"model.name": str(folder), "paths.cache": str(tmp_path / "c")})
    with pytest.raises(WebsdError, match="model.verify=on"):
        verify.run(cfg, "clip")
    on = load_config(pyproject=None, env={}, cli={"model.name": str(folder), "paths.cache": str(tmp_path / "c"),
                                                  "model.verify": "on"})
    with pytest.raises(WebsdError, match="run compile_clip first"):
        verify.run(on, "clip")


def test_a_non_square_size_traces_compiles_and_verifies(tiny_wide):  # noqa: F811
    """model.width=64 model.height=48: the UNet's latents are 1x4x6x8, the VAE's image 48 x 64, and the llvm builds
    match PyTorch (the fixture's build ran verify, which raises above its tolerance)."""
    layout = Layout.from_config(tiny_wide)
    assert layout.size == "64x48"
    unet = json.loads(layout.verify_report("unet").read_text())
    vae = json.loads(layout.verify_report("vae").read_text())
    assert unet["passed"] and unet["output_shape"] == [1, 4, 6, 8], unet
    assert vae["passed"] and vae["output_shape"] == [1, 48, 64, 3], vae
