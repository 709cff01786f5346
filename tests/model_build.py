"""The tiny model built once per test session (weights, trace, compile, shard, verify), in-process.

Several test modules share it; a session fixture imported into each of them would be instantiated once per
module, so the build is memoized here.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
SUBS = ("clip", "unet", "vae")
_BUILDS: dict[tuple, Config] = {}
_ROOT_DIR: list[Path] = []



def _cache_root() -> Path:
    if not _ROOT_DIR:
        _ROOT_DIR.append(Path(tempfile.mkdtemp(prefix="websd-models-")))
        atexit.register(cleanup)
    return _ROOT_DIR[0]


def tiny_config(cache: Path, **overrides) -> Config:
    return load_config(cli={"paths.cache": str(cache), **overrides})


def build_tiny(dtype: str = "float32", subs: tuple[str, ...] = SUBS, **overrides: str) -> Config:
    """Every model stage of the tiny model for ``subs`` (memoized per session); ``overrides``: more config."""
    key = (dtype, subs, tuple(sorted(overrides.items())))
    if key not in _BUILDS:
        from pipeline.model import compile as compile_stage
        from pipeline.model import hf, shard, trace, verify

        cfg = tiny_config(_cache_root() / "cache", **{"model.dtype": dtype, **overrides})
        if not hf.weight_files(cfg, "text_encoder")[0].exists():
            hf.materialize(cfg)
        for sub in subs:
            if not trace.paths(cfg, sub)[0].exists():
                trace.run(cfg, sub)
            compile_stage.run(cfg, sub)
            shard.run(cfg, sub)
            verify.run(cfg, sub)
        _BUILDS[key] = cfg
    return _BUILDS[key]


def build_alone(cache: Path, sub: str, **overrides: str) -> Config:
    """Every model stage of one tiny submodel in a cache of its own (not memoized): for builds whose trace differs
    from the shared ones' at the same path (a VAE tile, a limits profile patched in the test)."""
    from pipeline.model import compile as compile_stage
    from pipeline.model import hf, shard, trace, verify

    cfg = tiny_config(cache, **overrides)
    hf.materialize(cfg)
    for stage in (trace, compile_stage, shard, verify):
        stage.run(cfg, sub)
    return cfg


@pytest.fixture(scope="session")
def tiny_f32() -> Config:
    return build_tiny("float32")


@pytest.fixture(scope="session")
def tiny_f16_clip() -> Config:
    return build_tiny("float16", ("clip",))


@pytest.fixture(scope="session")
def tiny_wide() -> Config:
    """The tiny model's UNet and VAE at a non-square size, 64 wide and 48 high."""
    return build_tiny("float32", ("unet", "vae"), **{"model.width": "64", "model.height": "48"})


@pytest.fixture(scope="session")
def tiny_weights() -> Config:
    """Only the materialized tiny diffusers folder (no TVM)."""
    from pipeline.model import hf

    cfg = tiny_config(_cache_root() / "cache")
    if not hf.weight_files(cfg, "text_encoder")[0].exists():
        hf.materialize(cfg)
    return cfg


def run_stage(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m pipeline.run_stage ...`` in a child process (the way dodo.py runs it)."""
    full_env = dict(os.environ if env is None else env)
    return subprocess.run([sys.executable, "-m", "pipeline.run_stage", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def cleanup() -> None:
    for d in _ROOT_DIR:
        shutil.rmtree(d, ignore_errors=True)
