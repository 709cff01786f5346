"""Stage verify_<sub>: the llvm build with the shipped tensor cache agrees with PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import shard, verify
from pipeline.errors import WebsdError
from pipeline.layout import Layout
from tests.model_build import tiny_f16_clip, tiny_f32  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # builds the tiny model (once per session)


def test_tiny_float32_matches_pytorch_within_1e_4(tiny_f32):  # noqa: F811
    for sub in ("clip", "unet", "vae"):
        report = json.loads(Layout.from_config(tiny_f32).verify_report(sub).read_text())
        assert report["passed"] and report["max_abs_error_normalized"] <= 1e-4, (sub, report)
        assert report["max_abs_expected"] > 0


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
            verify.verify(tiny_f32, "vae")
        assert not layout.verify_report("vae").exists()
        assert json.loads((layout.verify_report("vae").with_name("vae.failed.json")).read_text())["passed"] is False
    finally:
        layout.verify_report("vae").write_text(saved)
        layout.verify_report("vae").with_name("vae.failed.json").unlink(missing_ok=True)
