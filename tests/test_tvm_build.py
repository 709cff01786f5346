import os
import sys
from pathlib import Path

import pytest

from pipeline import tvm_build, tvm_checkout
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.fsutil import write_json
from pipeline.layout import Layout
from tests.fixtures import make_fake_tvm


@pytest.fixture
def checkout(tmp_path):
    repo = make_fake_tvm(tmp_path)
    cfg = load_config(env={**os.environ, "WEBSD_TVM_MIRROR": str(repo)})
    return cfg, tvm_checkout.checkout_tvm(cfg, log=lambda m: None).src


def test_auto_picks_the_wheel_only_for_the_unmodified_release(checkout, monkeypatch):
    cfg, src = checkout
    monkeypatch.setattr(tvm_build, "installed_wheel_version", lambda: "0.26.0")
    assert tvm_build.choose_mode(cfg, src)[0] == "wheel"
    (src / "src" / "runtime.c").write_text("// edited\n")
    mode, reason = tvm_build.choose_mode(cfg, src)
    assert mode == "source" and "not the unmodified v0.26.0 release" in reason
    (src / "src" / "runtime.c").unlink()
    monkeypatch.setattr(tvm_build, "installed_wheel_version", lambda: "0.27.0.post1")
    mode, reason = tvm_build.choose_mode(cfg, src)
    assert mode == "source" and "installed apache-tvm is 0.27.0.post1" in reason


def test_forced_wheel_needs_the_matching_wheel(checkout, monkeypatch):
    cfg, src = checkout
    monkeypatch.setattr(tvm_build, "installed_wheel_version", lambda: None)
    wheel_cfg = load_config(env=os.environ, cli={"tvm.build": "wheel"})
    with pytest.raises(WebsdError, match=r"needs apache-tvm==0.26.0 installed \(found None\); run ./setup.sh"):
        tvm_build.choose_mode(wheel_cfg, src)


def test_missing_cmake_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "novenv" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(WebsdError, match=r"cmake not found: run ./setup.sh \(installs cmake >= 3.26"):
        tvm_build.find_cmake()


def test_old_cmake_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "cmake"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cmake version 3.25.1'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake.parent / "python"))
    with pytest.raises(WebsdError, match="is 3.25, TVM needs cmake >= 3.26"):
        tvm_build.find_cmake()


def test_config_cmake_is_the_template_plus_overrides_and_rewritten_only_on_change(checkout, tmp_path):
    cfg, src = checkout
    build = tmp_path / "build"
    settings = {"USE_LLVM": "llvm-config-19 --link-static", "USE_CUDA": "OFF"}
    assert tvm_build.write_config_cmake(src, build, settings) is True
    text = (build / "config.cmake").read_text()
    assert text.startswith("# fake TVM config.cmake template") and 'set(USE_LLVM "llvm-config-19 --link-static")' in text
    assert tvm_build.write_config_cmake(src, build, settings) is False
    assert tvm_build.write_config_cmake(src, build, {**settings, "USE_CUDA": "ON"}) is True


def test_tvm_env_points_stage_processes_at_a_source_build(tmp_path):
    cfg = load_config(env={**os.environ, "WEBSD_PATHS_CACHE": str(tmp_path)})
    layout = Layout.from_config(cfg)
    write_json(layout.tvm_build_stamp, {"mode": "wheel"})
    assert "TVM_LIBRARY_PATH" not in tvm_build.tvm_env(layout, base={"PATH": "/bin"})
    write_json(layout.tvm_build_stamp, {"mode": "source", "python_path": "/s/python", "library_path": "/s/build"})
    env = tvm_build.tvm_env(layout, base={"PYTHONPATH": "/mine"})
    assert env["PYTHONPATH"] == f"/s/python{os.pathsep}/mine" and env["TVM_LIBRARY_PATH"] == "/s/build"
