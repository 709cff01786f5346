"""python -m pipeline.run_stage: one-line errors, exit 2, nothing earlier destroyed; light imports for dodo."""
from __future__ import annotations

import os
import shutil

import pytest

from pipeline import models
from pipeline.model import trace
from pipeline.fsutil import sha256_file
from tests.model_build import run_stage as run_cli
from tests.model_build import tiny_config, tiny_f32, tiny_weights  # noqa: F401 - fixtures


@pytest.mark.parametrize("args, message", [
    (["bake", "clip"], "unknown stage 'bake'"),
    (["trace", "text"], "unknown submodel 'text'"),
    (["trace"], "needs a submodel"),
    (["trace", "clip", "model.dtype=float64"], "model.dtype"),
    (["trace", "clip", "model.name=/no/such/model"], "neither a registered model"),
    (["trace", "clip", "model.size=3"], "unknown config key"),
    (["trace", "clip", "model.dtype"], "expected section.key=value"),
])
def test_bad_input_is_one_error_line_and_exit_2(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr


@pytest.mark.slow
def test_corrupt_local_weights_fail_without_destroying_the_last_trace(tmp_path, tiny_weights):  # noqa: F811
    folder = tmp_path / "my-model"
    shutil.copytree(models.source(tiny_weights).folder, folder)
    env = {**os.environ, "WEBSD_PATHS_CACHE": str(tmp_path / "cache")}
    ok = run_cli("trace", "clip", f"model.name={folder}", env=env)
    assert ok.returncode == 0, ok.stderr
    cfg = tiny_config(tmp_path / "cache", **{"model.name": str(folder)})
    pt2 = trace.paths(cfg, "clip")[0]
    before = sha256_file(pt2)
    weights = folder / "text_encoder" / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    bad = run_cli("trace", "clip", f"model.name={folder}", env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: cannot load text_encoder weights")
    assert sha256_file(pt2) == before


def test_modules_dodo_imports_stay_light():
    import subprocess
    import sys

    from tests.model_build import ROOT

    code = ("import sys, pipeline.run_stage, pipeline.stages, pipeline.models, pipeline.submodels; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'tvm', 'tvm_ffi', 'diffusers', 'transformers', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
