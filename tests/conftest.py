"""Shared fixtures: an isolated cache + user config per test, a doit runner that reports what executed,
and the real-TVM-source switch."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config, user_config_path  # noqa: E402

# The developer's real settings (e.g. tvm.mirror from the user config) decide whether real-TVM tests run; read them
# before the autouse fixture below hides the user config from everything else.
_REAL = load_config(pyproject=None)
REAL_TVM_MIRROR = _REAL.tvm.mirror
needs_tvm_source = pytest.mark.skipif(
    not REAL_TVM_MIRROR,
    reason="no real TVM source configured: set WEBSD_TVM_MIRROR (or tvm.mirror in "
           f"{user_config_path()}) to a TVM git mirror to run this test",
)

LAVAPIPE_ICD = ROOT / ".venv" / "lavapipe" / "lvp_icd.json"


def runner_env() -> dict:
    """The environment that makes Dawn (npm ``webgpu``) use lavapipe, the software Vulkan driver."""
    return {**os.environ, "VK_ICD_FILENAMES": str(LAVAPIPE_ICD), "XDG_RUNTIME_DIR": os.environ.get(
        "XDG_RUNTIME_DIR", "/tmp")}


@pytest.fixture(scope="session")
def node():
    """Node with Dawn and lavapipe (the headless runner, tests/node/run_wgsl.mjs)."""
    # ./setup.sh installs all three; in CI a missing one is a broken setup, not a reason to skip
    missing = pytest.fail if os.environ.get("CI") else pytest.skip
    path = shutil.which("node")
    if path is None:
        missing("node is not installed (the runner needs Node >= 20)")
    if not (ROOT / "web" / "node_modules" / "webgpu").is_dir():
        missing("web/node_modules/webgpu is missing: run ./setup.sh (npm install in web/)")
    if not LAVAPIPE_ICD.is_file():
        missing(f"{LAVAPIPE_ICD} is missing: ./setup.sh unpacks lavapipe there (needs the backports suite)")
    return path


LAVAPIPE_SM_NODE = ROOT / ".venv" / "lavapipe-sm" / "bin" / "node"


@pytest.fixture(scope="session")
def node_sm(node):
    """Node with Dawn on Mesa 26's lavapipe, which offers chromium-experimental-subgroup-matrix (with Dawn's
    allow_unsafe_apis): a wrapper ./setup.sh writes where the Debian archive has that Mesa (else it skips it, so
    tests that need it skip too, CI included)."""
    if not LAVAPIPE_SM_NODE.is_file():  # in CI a missing one is a broken setup, as for `node`
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{LAVAPIPE_SM_NODE} is missing: ./setup.sh installs it where the Debian archive has Mesa 26 "
                    "(lavapipe with subgroup matrices)")
    return str(LAVAPIPE_SM_NODE)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the developer's user config or WEBSD_* variables, nor writes into the repo's cache/."""
    for name in list(os.environ):
        if name.startswith(("WEBSD_", "AWS_")):  # nor the developer's AWS credentials (tests/s3_server.py has its own)
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("WEBSD_PATHS_CACHE", str(tmp_path / "cache"))
    yield


@pytest.fixture
def s3_server(tmp_path):
    """A real S3 server (SeaweedFS) on 127.0.0.1 for one test, with buckets ``cache`` and ``site``; stopped after."""
    from tests.s3_server import SeaweedS3, available

    why = available()
    if why:  # ./setup.sh installs it; in CI a missing server is a broken setup, not a reason to skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)
    server = SeaweedS3(tmp_path / "seaweed").start()
    yield server
    server.stop()


@dataclass
class DoitRun:
    returncode: int
    output: str
    executed: set[str]
    uptodate: set[str]


def run_doit(*args: str, env: dict | None = None, timeout: float = 1800, cwd: Path = ROOT) -> DoitRun:
    """Run ``doit`` in the project root (or ``cwd``, e.g. a copy of the project) and parse doit's own output:
    ``.  task`` ran, ``-- task`` was up to date."""
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=cwd, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    executed = set(re.findall(r"^\.  (\S+)", out, re.M))
    uptodate = set(re.findall(r"^-- (\S+)", out, re.M))
    return DoitRun(proc.returncode, out, executed, uptodate)


@pytest.fixture
def doit():
    return run_doit


def real_env(cache: Path, **extra: str) -> dict:
    """Environment for a doit run against the real TVM source the developer configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSD_")}
    env.update(WEBSD_PATHS_CACHE=str(cache), WEBSD_TVM_MIRROR=_REAL.tvm.mirror,
               WEBSD_TVM_FFI_MIRROR=_REAL.tvm.ffi_mirror, WEBSD_TVM_SUBMODULE_MIRRORS=_REAL.tvm.submodule_mirrors,
               **extra)
    return env


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """A cache with the real TVM checkout, the selected TVM and the tvmjs runtime, built once per session.

    ``WEBSD_TEST_REAL_CACHE=<dir>`` keeps it across sessions (the runtime build takes minutes); doit rebuilds
    only what is stale there.
    """
    if not REAL_TVM_MIRROR:
        pytest.skip(needs_tvm_source.kwargs["reason"])
    cache = Path(os.environ.get("WEBSD_TEST_REAL_CACHE") or tmp_path_factory.mktemp("real-cache"))
    res = run_doit("tvm_build", "tvmjs_runtime", env=real_env(cache))
    assert res.returncode == 0, res.output
    return cache
