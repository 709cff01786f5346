import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.toolchain import tvm_build, tvm_checkout
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.fsutil import write_json
from pipeline.layout import Layout
from tests.conftest import ROOT, needs_tvm_source, real_env, run_doit
from tests.fixtures import git, make_fake_tvm


@pytest.fixture
def checkout(tmp_path):
    repo = make_fake_tvm(tmp_path)
    cfg = load_config(env={**os.environ, "WEBSD_TVM_MIRROR": str(repo)})
    return cfg, tvm_checkout.run(cfg, log=lambda m: None).src


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


def fake_ffi_submodule(src: Path) -> Path:
    ffi = src / tvm_checkout.TVM_FFI_SUBMODULE
    ffi.mkdir(parents=True, exist_ok=True)
    (ffi / "pyproject.toml").write_text("[project]\nname = 'apache-tvm-ffi'\n")
    (ffi / ".websd-source").write_text("sdist apache-tvm-ffi==0.1.13.post2\n")
    return ffi


def test_tvm_ffi_python_comes_from_the_checkout_and_is_rebuilt_only_when_it_changes(tmp_path, monkeypatch):
    src, build = tmp_path / "src", tmp_path / "build"
    ffi = fake_ffi_submodule(src)
    calls = []

    def fake_pip(cmd, cwd, log_path, progress=None, env=None):
        calls.append(cmd)
        target = Path(cmd[cmd.index("--target") + 1])
        if "fail" in ffi.joinpath(".websd-source").read_text():
            raise WebsdError("python failed (exit 1)")
        (target / "tvm_ffi").mkdir(parents=True)
        (target / "tvm_ffi" / "__init__.py").write_text(f"BUILT_FROM = {len(calls)}\n")

    monkeypatch.setattr(tvm_build, "_run_logged", fake_pip)
    target = tvm_build.install_tvm_ffi_python(src, build, build / "log")
    assert target == build / "tvm-ffi-python" and (target / "tvm_ffi" / "__init__.py").exists()
    (cmd,) = calls
    assert cmd[-1] == str(ffi) and "--no-deps" in cmd  # the checkout's submodule, never the venv's wheel
    assert "cmake.define.TVM_FFI_USE_LIBBACKTRACE=OFF" in cmd

    tvm_build.install_tvm_ffi_python(src, build, build / "log")
    assert len(calls) == 1  # unchanged submodule: nothing to do

    (ffi / ".websd-source").write_text("sdist apache-tvm-ffi==0.1.14.post0\n")
    tvm_build.install_tvm_ffi_python(src, build, build / "log")
    assert len(calls) == 2 and "BUILT_FROM = 2" in (target / "tvm_ffi" / "__init__.py").read_text()

    # a failed install keeps the last good package and leaves no temp behind
    (ffi / ".websd-source").write_text("fail\n")
    with pytest.raises(WebsdError):
        tvm_build.install_tvm_ffi_python(src, build, build / "log")
    assert "BUILT_FROM = 2" in (target / "tvm_ffi" / "__init__.py").read_text()
    assert sorted(p.name for p in build.iterdir()) == ["tvm-ffi-python"]


def test_tvm_ffi_python_key_follows_the_submodule_commit_and_edits(checkout):
    _, src = checkout
    ffi = src / tvm_checkout.TVM_FFI_SUBMODULE
    ffi.mkdir(parents=True)
    git(ffi, "init", "-q")
    (ffi / "pyproject.toml").write_text("v1\n")
    git(ffi, "add", "-A")
    git(ffi, "commit", "-qm", "v1")
    first = tvm_build.tvm_ffi_python_key(src)
    assert tvm_build.tvm_ffi_python_key(src) == first
    (ffi / "pyproject.toml").write_text("v2\n")
    assert tvm_build.tvm_ffi_python_key(src) != first


# --- real: a source build of the configured TVM ---------------------------------------------------------------------

SOURCE_BUILD_CACHE = os.environ.get("WEBSD_TEST_SOURCE_BUILD_CACHE", "")

# run under tvm_env: which tvm, tvm_ffi and shared libraries a stage process really gets, and whether they work
SOURCE_PROBE = r"""
import json
import numpy as np
import tvm, tvm_ffi
from tvm import relax
from tests.fixtures import matmul_add_relu

rng = np.random.default_rng(0)
x, w, b = (rng.standard_normal(s).astype("float32") for s in ((4, 8), (8, 16), (16,)))
dev = tvm.cpu()
vm = relax.VirtualMachine(tvm.compile(matmul_add_relu(), "llvm"), dev)
y = vm["main"](*(tvm.runtime.tensor(a, dev) for a in (x, w, b))).numpy()
maps = open("/proc/self/maps").read().split()
print(json.dumps({"tvm": tvm.__file__, "tvm_ffi": tvm_ffi.__file__,
                  "libs": sorted({p for p in maps if p.endswith((".so", ".so.0")) and "libtvm" in p}),
                  "max_err": float(np.abs(y - np.maximum(x @ w + b, 0)).max())}))
"""


@needs_tvm_source
@pytest.mark.skipif(not SOURCE_BUILD_CACHE, reason="a TVM source build takes over an hour on 2 cores: set "
                    "WEBSD_TEST_SOURCE_BUILD_CACHE=<dir> to build it there once and run this test")
def test_stage_processes_run_the_source_built_tvm_and_tvm_ffi():
    cache = Path(SOURCE_BUILD_CACHE)
    res = run_doit("tvm_build", "tvm.build=source", env=real_env(cache), timeout=6 * 3600)
    assert res.returncode == 0, res.output
    layout = Layout.from_config(load_config(env={"WEBSD_PATHS_CACHE": str(cache)}))
    probe = subprocess.run([sys.executable, "-c", SOURCE_PROBE], cwd=ROOT, env=tvm_build.tvm_env(layout),
                           capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.splitlines()[-1])
    build = layout.tvm_build_dir
    assert Path(seen["tvm"]).is_relative_to(layout.tvm_src / "python")  # the checkout's package, not the wheel
    assert Path(seen["tvm_ffi"]).is_relative_to(build / "tvm-ffi-python")
    # libtvm_runtime, libtvm_compiler from build/lib and libtvm_ffi from tvm-ffi-python: none from the wheels
    assert any(Path(p).name == "libtvm_runtime.so" for p in seen["libs"]), seen["libs"]
    assert all(Path(p).is_relative_to(build) for p in seen["libs"]), seen["libs"]
    assert seen["max_err"] < 1e-4
