"""Stage ``tvm_build``: select the TVM that later stages run against.

``tvm.build``:
  * ``wheel``  - the installed ``apache-tvm`` wheel; no C++ is compiled.
  * ``source`` - cmake + ninja build of the checkout (LLVM on), incremental, ccache when present.
  * ``auto``   - the wheel when the checkout is an unmodified release tag equal to the wheel's version, else source.

The result is ``cache/tvm/build.json``; ``tvm_env`` turns it into the environment of the stage subprocesses
(``PYTHONPATH``/``TVM_LIBRARY_PATH`` pointing at the checkout's Python package and the built libraries; in source
mode also at the tvm_ffi package built from the checkout's ``3rdparty/tvm-ffi``, as TVM's install docs prescribe).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from . import tvm_checkout, versions
from ..config import Config
from ..errors import WebsdError
from ..procs import require_tool, run_logged
from ..fsutil import atomic_path, atomic_write, read_json, write_json
from ..layout import Layout

MIN_CMAKE = (3, 26)  # TVM >= 0.22 bundles tvm-ffi, whose CMakeLists needs 3.26

Progress = Callable[[int, int, str], None]  # (done steps, total steps, what)


def installed_wheel_version() -> str | None:
    try:
        return importlib.metadata.version("apache-tvm")
    except importlib.metadata.PackageNotFoundError:
        return None


def choose_mode(cfg: Config, src: Path) -> tuple[str, str]:
    """Return ``("wheel"|"source", reason)`` for ``tvm.build``."""
    rel = versions.release(cfg.tvm.version)
    want_wheel = rel.wheel_version or cfg.tvm.version
    have = installed_wheel_version()
    if cfg.tvm.build == "source":
        return "source", "tvm.build = source"
    if cfg.tvm.build == "wheel":
        if have != want_wheel:
            raise WebsdError(f"tvm.build = wheel needs apache-tvm=={want_wheel} installed (found {have}); run ./setup.sh")
        return "wheel", f"tvm.build = wheel (apache-tvm {have})"
    if not rel.has_wheel:
        return "source", f"no apache-tvm wheel exists for {cfg.tvm.version}"
    if have != want_wheel:
        return "source", f"installed apache-tvm is {have}, not {want_wheel}"
    if not tvm_checkout.is_unmodified_release(src, cfg.tvm.version):
        return "source", f"checkout is not the unmodified v{cfg.tvm.version} release"
    return "wheel", f"checkout is the unmodified v{cfg.tvm.version} release: apache-tvm {have} wheel substitutes"


def find_cmake() -> str:
    cmake = require_tool("cmake")
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < MIN_CMAKE:
        raise WebsdError(f"{cmake} is {m[0] if m else 'unknown'}, TVM needs cmake >= 3.26: run ./setup.sh "
                         f"(installs cmake from PyPI into .venv)")
    return cmake


def cmake_settings(cfg: Config) -> dict[str, str]:
    """The config.cmake overrides the pipeline owns; everything else keeps TVM's own defaults."""
    llvm = shutil.which(cfg.tvm.llvm_config)
    if not llvm:
        raise WebsdError(f"{cfg.tvm.llvm_config} not found: run ./setup.sh (installs Debian's llvm-19-dev) "
                         f"or set tvm.llvm_config")
    static = versions.release(cfg.tvm.version).llvm_static
    return {
        "USE_LLVM": f"{llvm} --link-static" if static else llvm,
        "USE_CUDA": "OFF",
        "USE_CCACHE": "AUTO",
        # libbacktrace is another submodule, unreachable offline; backtraces are a debugging nicety
        "TVM_FFI_USE_LIBBACKTRACE": "OFF",
        "USE_LIBBACKTRACE": "OFF",
        "USE_GTEST": "OFF",
        "CMAKE_BUILD_TYPE": "Release",
        # TVM < 0.22 builds its Cython FFI (python/tvm/ffi/cython) as part of `ninja` with this interpreter
        "Python_EXECUTABLE": sys.executable,
    }


def write_config_cmake(src: Path, build_dir: Path, settings: dict[str, str]) -> bool:
    """TVM's documented recipe: its cmake/config.cmake template plus our overrides. Returns True if it changed."""
    text = (src / "cmake" / "config.cmake").read_text()
    text += "\n# --- websd overrides (pipeline/tvm_build.py) ---\n"
    text += "".join(f'set({k} "{v}")\n' for k, v in settings.items())
    target = build_dir / "config.cmake"
    if target.exists() and target.read_text() == text:
        return False
    with atomic_write(target) as f:
        f.write(text)
    return True


_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)")


def _run_logged(cmd: list[str], cwd: Path, log_path: Path, progress: Progress | None = None,
                env: dict | None = None) -> None:
    """Run a build step with its output in ``log_path``; ninja's ``[n/N]`` lines become progress."""
    def on_line(line: str) -> None:
        m = _NINJA_STEP.match(line)
        if m and progress:
            progress(int(m[1]), int(m[2]), m[3][-80:])

    run_logged(cmd, log_path, what=Path(cmd[0]).name, cwd=cwd, env=env, on_line=on_line)


def build_from_source(cfg: Config, progress: Progress | None = None) -> dict:
    """Configure (when config.cmake changed) and run ninja in ``cache/tvm/build``: ninja makes it incremental."""
    layout = Layout.from_config(cfg)
    src, build_dir = layout.tvm_src, layout.tvm_build_dir
    cmake = find_cmake()
    ninja = require_tool("ninja")
    if (src / "python" / "tvm" / "ffi" / "cython").is_dir():
        try:
            import Cython  # noqa: F401  - TVM < 0.22's tvm_cython build step runs setup.py with this Python
        except ImportError:
            raise WebsdError(f"TVM {cfg.tvm.version} builds its FFI with Cython, which {sys.executable} lacks: "
                             f"run ./setup.sh (or pip install cython)") from None
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = build_dir / "websd-build.log"
    log_path.write_text("")
    changed = write_config_cmake(src, build_dir, cmake_settings(cfg))
    if changed or not (build_dir / "build.ninja").exists():
        _run_logged([cmake, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", str(src)], build_dir, log_path)
    jobs = ["-j", str(cfg.tvm.build_jobs)] if cfg.tvm.build_jobs else []
    start = time.time()
    _run_logged([ninja, *jobs], build_dir, log_path, progress)
    # TVM >= 0.22 writes its libraries to build/lib, older releases to build/
    lib_dir = next((d for d in (build_dir / "lib", build_dir) if (d / "libtvm_runtime.so").exists()), None)
    if lib_dir is None:
        raise WebsdError(f"ninja finished but {build_dir} has no libtvm_runtime.so (nor lib/ under it); see {log_path}")
    result = {"libraries": sorted(p.name for p in lib_dir.glob("lib*.so")), "library_path": str(lib_dir),
              "ninja_seconds": round(time.time() - start, 1), "ffi_python_path": ""}
    if (src / tvm_checkout.TVM_FFI_SUBMODULE / "pyproject.toml").exists():  # TVM >= 0.22 bundles tvm-ffi
        start = time.time()
        result["ffi_python_path"] = str(install_tvm_ffi_python(src, build_dir, log_path))
        result["ffi_python_seconds"] = round(time.time() - start, 1)
    return result


def tvm_ffi_python_key(src: Path) -> str:
    """What the tvm-ffi Python package is built from: the submodule's commit and local edits, or its sdist."""
    ffi = src / tvm_checkout.TVM_FFI_SUBMODULE
    if (ffi / ".git").exists():
        return tvm_checkout.source_fingerprint(ffi)
    origin = ffi / ".websd-source"
    return origin.read_text() if origin.exists() else "unknown"


def install_tvm_ffi_python(src: Path, build_dir: Path, log_path: Path) -> Path:
    """TVM's from-source recipe: ``pip install --target`` of the checkout's ``3rdparty/tvm-ffi``.

    libtvm is built against that submodule, which can be another version than the ``apache-tvm-ffi`` wheel in the
    venv (v0.26.0 pins a commit no release has): ``import tvm_ffi`` must load the matching one. Installed into the
    build directory, never the venv, so wheel mode keeps working; skipped while the submodule is unchanged, and the
    scikit-build directory is kept so a rebuild is incremental.
    """
    target = build_dir / "tvm-ffi-python"
    key = tvm_ffi_python_key(src)
    stamp = target / ".websd-key"
    if stamp.exists() and stamp.read_text() == key:
        return target
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # PyPI cmake and ninja
    if shutil.which("ccache"):
        env["CMAKE_C_COMPILER_LAUNCHER"] = env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
    with atomic_path(target) as work:
        _run_logged([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                     "--target", str(work), "--config-settings", f"build-dir={build_dir / 'tvm-ffi-python-build'}",
                     # as in cmake_settings: libbacktrace is a submodule that is unreachable offline
                     "--config-settings", "cmake.define.TVM_FFI_USE_LIBBACKTRACE=OFF",
                     str(src / tvm_checkout.TVM_FFI_SUBMODULE)], build_dir, log_path, env=env)
        (work / ".websd-key").write_text(key)
    return target


def build_tvm(cfg: Config, progress: Progress | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the stage: decide wheel vs source, build if needed, write ``build.json``; return its content."""
    layout = Layout.from_config(cfg)
    src = layout.tvm_src
    if not (src / ".git").exists():
        raise WebsdError(f"no TVM checkout at {src}: run `doit tvm_checkout` first")
    mode, reason = choose_mode(cfg, src)
    log(f"tvm_build: {mode} ({reason})")
    selection = {
        "mode": mode,
        "reason": reason,
        "tvm_version": cfg.tvm.version,
        "commit": tvm_checkout.head_commit(src),
        "fingerprint": tvm_checkout.source_fingerprint(src, tvm_checkout.BUILD_PATHS),
        "python_path": "",
        "library_path": "",
    }
    if mode == "source":
        selection.update(build_from_source(cfg, progress))
        # tvm_ffi first: PYTHONPATH wins over the venv's apache-tvm-ffi wheel
        paths = (selection.pop("ffi_python_path"), str(src / "python"))
        selection["python_path"] = os.pathsep.join(p for p in paths if p)
    else:
        selection["wheel"] = installed_wheel_version()
    write_json(layout.tvm_build_stamp, selection)
    return selection


def selection_present(layout: Layout) -> bool:
    """Whether what ``build.json`` selected is still on disk (e.g. not ``rm -rf cache/tvm/build``)."""
    selection = read_json(layout.tvm_build_stamp, {})
    paths = [selection.get("library_path", ""), *selection.get("python_path", "").split(os.pathsep)]
    return all(Path(p).exists() for p in paths if p)


def tvm_env(layout: Layout, base: dict | None = None) -> dict:
    """Environment for a stage subprocess so that ``import tvm`` gets the TVM ``tvm_build`` selected."""
    env = dict(os.environ if base is None else base)
    selection = read_json(layout.tvm_build_stamp, {})
    if selection.get("mode") == "source":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (selection["python_path"], env.get("PYTHONPATH")) if p)
        env["TVM_LIBRARY_PATH"] = selection["library_path"]
    return env


def fingerprint(cfg: Config) -> list:
    """What makes the selection stale beyond config: the checkout's build sources, the installed wheel, and
    whether the selected build is still on disk."""
    layout = Layout.from_config(cfg)
    return [tvm_checkout.source_fingerprint(layout.tvm_src, tvm_checkout.BUILD_PATHS), installed_wheel_version(),
            selection_present(layout)]


def run(cfg: Config) -> dict:
    """Stage ``tvm_build`` with live progress."""
    from ..progress import StageProgress

    with StageProgress("tvm_build") as progress:
        return build_tvm(cfg, progress.update)


# --- the stage (pipeline.stages) --------------------------------------------------------------------------------

CONFIG_KEYS = ("tvm.build", "tvm.llvm_config", "tvm.version", "tvm.build_jobs")


def outputs(cfg: Config) -> list[Path]:
    return [Layout.from_config(cfg).tvm_build_stamp]


def cleans(cfg: Config) -> list[Path]:
    layout = Layout.from_config(cfg)
    return [layout.tvm_build_dir, layout.tvm_build_stamp]
