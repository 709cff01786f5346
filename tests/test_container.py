"""The Containerfile end to end (opt-in): builds the toolchain image with podman, the tiny site twice in two fresh
containers, and checks the two site trees are byte-identical. It runs ``benchmarks/bench_container.py`` with its
results in a temp folder.

Opt-in, since a first run takes tens of minutes (Debian packages, torch, TVM's web runtime, two site builds) and CI
has a 30-minute budget: ``WEBSD_TEST_CONTAINER=1 ./run_tests.sh tests/test_container.py``. Needs podman (and
debootstrap when ``localhost/debian-bookworm:base`` is missing), root, and a TVM mirror (``WEBSD_TVM_MIRROR`` or
``tvm.mirror`` in the user config).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import _REAL, REAL_TVM_MIRROR, ROOT

OPTED_IN = os.environ.get("WEBSD_TEST_CONTAINER") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not OPTED_IN, reason="opt-in (tens of minutes): set WEBSD_TEST_CONTAINER=1 to build the image"),
    pytest.mark.skipif(not shutil.which("podman"), reason="podman not found: apt-get install podman debootstrap"),
    pytest.mark.skipif(not REAL_TVM_MIRROR, reason="no TVM mirror: set WEBSD_TVM_MIRROR to a git mirror of apache/tvm"),
]


def test_two_site_builds_in_fresh_containers_are_byte_identical(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_container.py"), "--results", str(tmp_path),
           "--tvm-mirror", REAL_TVM_MIRROR, *(["--ffi-mirror", _REAL.tvm.ffi_mirror] if _REAL.tvm.ffi_mirror else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    result_file = tmp_path / "container-build.json"
    assert result_file.exists(), f"bench_container.py failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}" \
                                 f"{proc.stderr[-3000:]}"
    result = json.loads(result_file.read_text())
    assert result["identical"], f"site trees differ: {result['differing_files']}"
    assert proc.returncode == 0
    assert all(b["files"] > 0 for b in result["site_builds"])
