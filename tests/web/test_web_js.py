"""Runs the page's JavaScript unit tests (web/test/*.test.mjs, `node --test`) against reference data freshly
computed by the Python stack (tests/web/make_fixtures.py): tokenizer ids, scheduler runs, torch.randn; and the
launch path's tests (web/test/launch.test.mjs) on Dawn + lavapipe."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.web.make_fixtures import ROOT, make_fixtures

WEB = ROOT / "web"


def test_js_unit_tests_pass_against_python_reference(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the page's JS tests need Node >= 20)")
    if not (WEB / "node_modules" / "@huggingface" / "tokenizers").is_dir():
        pytest.skip("web/node_modules is missing: run `npm install` in web/")
    make_fixtures(tmp_path)
    env = {**os.environ, "WEBSD_FIXTURES": str(tmp_path)}
    lavapipe = ROOT / ".venv" / "lavapipe" / "lvp_icd.json"
    if lavapipe.is_file():  # launch.test.mjs runs kernels on Dawn: lavapipe wherever ./setup.sh unpacked it
        env["VK_ICD_FILENAMES"] = str(lavapipe)
    proc = subprocess.run([node, "--test", "test/"], cwd=WEB, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    assert "# fail 0" in proc.stdout
    if lavapipe.is_file():  # with a GPU adapter at hand, no GPU test may skip
        assert "# skipped 0" in proc.stdout, proc.stdout[-5000:]
