"""The ``tvmjs_runtime`` stage: TVM's web runtime built once from a TVM source checkout with emscripten.

Outputs (``Layout.tvmjs_dir``, written atomically as one directory):
  objects/*.o              the C++ runtime (web/emcc/*.cc) as wasm object files, compiled once at -O3. Model links
                           (pipeline.model.wasm_link) use these instead of TVM's bitcode, which costs ~80 s of LTO per link.
  tvmjs_runtime.wasm       the runtime linked alone with ASYNCIFY, as TVM's web/Makefile does; its imports are the
                           ones the JS glue provides (wasm_link checks model wasms against them).
  tvmjs_runtime.emcc.js    emcc's JS glue as emitted (kept so that a web/src-only change re-bundles without emcc)
  tvmjs_runtime.wasi.js    the emscripten JS glue wrapped as a WASI provider (CommonJS)
  tvmjs.bundle.js          the tvmjs library (UMD, global ``tvmjs``) with the glue inside, built by rollup
  runtime.json             stamp: files + sha256, emcc version, TVM commit, flags

We run TVM's Makefile steps with our own argument lists instead of ``make`` so that nothing is written into the
checkout; the npm build runs in a copy of web/.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..config import Config
from ..errors import WebsdError
from ..layout import Layout
from ..procs import niced, require_tool, run_logged
from ..fsutil import atomic_path, read_json, scratch_dir, sha256_file, sha256_json, write_json
from .tvm_checkout import source_fingerprint

Progress = Callable[[str], None] | None

# Debian's node does not search Debian's JS module dir; emcc's JS optimizer needs `acorn` from there.
DEBIAN_NODE_MODULES = Path("/usr/share/nodejs")

# web/emcc/<name>.cc -> objects/<name>.o (same list as TVM's web/Makefile)
RUNTIME_SOURCES = ("wasm_runtime", "tvmjs_support", "webgpu_runtime")
# relative to the TVM checkout: web/Makefile's INCLUDE_FLAGS, read from the checkout (include_dirs); these are
# v0.26's, used when the Makefile has none. v0.21 has its FFI in ffi/ and adds dmlc-core and picojson.
INCLUDE_DIRS = (".", "include", "3rdparty/tvm-ffi/include", "3rdparty/tvm-ffi/3rdparty/dlpack/include",
                "3rdparty/compiler-rt")
# web/Makefile EMCC_CFLAGS (without includes). -c without -emit-llvm gives wasm objects, not bitcode.
COMPILE_FLAGS = ("-O3", "-std=c++17", "-Wno-ignored-attributes")
# web/Makefile EMCC_LDFLAGS (without --pre-js, added with its absolute path)
GLUE_LINK_FLAGS = ("--no-entry", "-s", "WASM_BIGINT=1", "-s", "ALLOW_MEMORY_GROWTH=1", "-s", "STANDALONE_WASM=1",
                   "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0", "-s", "ASYNCIFY=1")
# Checkout trees whose content the build reads (headers and the .cc files wasm_runtime.cc #includes).
INPUT_TREES = ("web/emcc", "web/src", "include", "src/runtime", "src/support", "3rdparty/tvm-ffi/include",
               "3rdparty/tvm-ffi/src/ffi", "3rdparty/tvm-ffi/3rdparty/dlpack/include", "3rdparty/compiler-rt",
               # TVM < 0.22: the FFI in-tree, dmlc-core and picojson headers
               "ffi/include", "ffi/src/ffi", "ffi/3rdparty/dlpack/include", "3rdparty/dmlc-core/include",
               "3rdparty/picojson")
INPUT_FILES = ("web/package.json", "web/package-lock.json", "web/rollup.config.mjs", "web/tsconfig.json")
# produced by the build inside web/src; never an input
GENERATED_IN_WEB_SRC = "tvmjs_runtime_wasi.js"
# The part of RUNTIME_PATHS the C++ objects and the emcc glue depend on: when only web/src or the npm files change,
# a rebuild reuses the previous objects and glue and only re-bundles (seconds instead of minutes).
NATIVE_PATHS = ("web/emcc", "include", "src/runtime", "src/support", "3rdparty/tvm-ffi", "3rdparty/compiler-rt",
                "ffi", "3rdparty/dmlc-core/include", "3rdparty/picojson")
# The same inputs as checkout-relative paths for pipeline.toolchain.tvm_checkout.source_fingerprint (tvm-ffi as a whole: the
# fingerprint adds where it came from, git or an sdist, only when this prefix is listed).
RUNTIME_PATHS = (*(t for t in INPUT_TREES if not t.startswith("3rdparty/tvm-ffi/")), "3rdparty/tvm-ffi",
                 *INPUT_FILES)

STAMP_NAME = "runtime.json"
BUNDLE_NAME = "tvmjs.bundle.js"
WASI_JS_NAME = "tvmjs_runtime.wasi.js"
RUNTIME_WASM_NAME = "tvmjs_runtime.wasm"
EMCC_JS_NAME = "tvmjs_runtime.emcc.js"  # emcc's JS before decorate_as_wasi.py; kept so a re-bundle can reuse it
OBJECTS_DIR = "objects"

@dataclass(frozen=True)
class RuntimeArtifacts:
    """A built tvmjs runtime directory (see module doc)."""

    dir: Path
    objects: tuple[Path, ...]
    runtime_wasm: Path
    emcc_js: Path
    wasi_js: Path
    bundle_js: Path
    stamp: Path

    @classmethod
    def at(cls, out_dir: Path) -> "RuntimeArtifacts":
        out_dir = Path(out_dir).resolve()  # absolute: the tools run in other working directories
        return cls(
            dir=out_dir,
            objects=tuple(out_dir / OBJECTS_DIR / f"{name}.o" for name in RUNTIME_SOURCES),
            runtime_wasm=out_dir / RUNTIME_WASM_NAME,
            emcc_js=out_dir / EMCC_JS_NAME,
            wasi_js=out_dir / WASI_JS_NAME,
            bundle_js=out_dir / BUNDLE_NAME,
            stamp=out_dir / STAMP_NAME,
        )

    @classmethod
    def load(cls, out_dir: Path) -> "RuntimeArtifacts":
        """The runtime built in ``out_dir``; a WebsdError when it is missing or incomplete."""
        art = cls.at(out_dir)
        stamp = read_json(art.stamp)
        if stamp is None:
            raise WebsdError(f"no tvmjs runtime in {art.dir}: run `doit tvmjs_runtime` first")
        missing = [p for p in art.files() if not p.is_file()]
        if missing:
            raise WebsdError(f"tvmjs runtime in {art.dir} is incomplete (no {missing[0].name}): "
                             f"delete {art.dir} and run `doit tvmjs_runtime`")
        return art

    def files(self) -> list[Path]:
        return [*self.objects, self.runtime_wasm, self.emcc_js, self.wasi_js, self.bundle_js, self.stamp]

    def native_files(self) -> list[Path]:
        """What the emcc steps produce (reusable while NATIVE_PATHS, emcc and the flags are unchanged)."""
        return [*self.objects, self.runtime_wasm, self.emcc_js]

    def info(self) -> dict:
        return read_json(self.stamp, {})


def runtime_stamp(out_dir: Path) -> Path:
    """The stage's doit target: runtime.json, the last file written; the whole directory appears atomically."""
    return RuntimeArtifacts.at(out_dir).stamp


def bundle_path(out_dir: Path) -> Path:
    """tvmjs.bundle.js (UMD, global ``tvmjs``, the WASI glue inside): the one runtime file the page loads."""
    return RuntimeArtifacts.at(out_dir).bundle_js


# --- tools ------------------------------------------------------------------------------------------

def tool_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for emcc/npm: NODE_PATH gains Debian's JS module dir (emcc's JS optimizer needs acorn)."""
    env = dict(os.environ if base is None else base)
    parts = [p for p in env.get("NODE_PATH", "").split(os.pathsep) if p]
    if DEBIAN_NODE_MODULES.is_dir() and str(DEBIAN_NODE_MODULES) not in parts:
        parts.append(str(DEBIAN_NODE_MODULES))
    if parts:
        env["NODE_PATH"] = os.pathsep.join(parts)
    return env


def emcc_version(emcc: str, env: Mapping[str, str] | None = None) -> str:
    out = subprocess.run([emcc, "--version"], capture_output=True, text=True, env=env, check=False).stdout
    m = re.search(r"\b(\d+\.\d+\.\d+)\b", out)
    if not m:
        raise WebsdError(f"{emcc} --version printed no version: reinstall emscripten with ./setup.sh")
    return m.group(1)


# --- inputs -----------------------------------------------------------------------------------------

def include_dirs(tvm_src: Path) -> tuple[str, ...]:
    """web/Makefile's include directories (``-I$(TVM_ROOT)/<dir>``), relative to the checkout."""
    makefile = Path(tvm_src) / "web" / "Makefile"
    text = makefile.read_text().replace("\\\n", " ") if makefile.is_file() else ""
    m = re.search(r"^INCLUDE_FLAGS\s*=(.*)$", text, re.M)
    if not m:
        return INCLUDE_DIRS
    dirs = re.findall(r"-I\$\(TVM_ROOT\)(/\S*)?", m.group(1))
    return tuple(d.strip("/") or "." for d in dirs) or INCLUDE_DIRS


def check_checkout(tvm_src: Path) -> None:
    tvm_src = Path(tvm_src)
    missing = [f"web/emcc/{n}.cc" for n in RUNTIME_SOURCES if not (tvm_src / "web" / "emcc" / f"{n}.cc").is_file()]
    dirs = include_dirs(tvm_src)
    missing += [d for d in dirs if not (tvm_src / d).is_dir()]
    if not any((tvm_src / d / "dlpack" / "dlpack.h").is_file() for d in dirs):
        missing.append("dlpack/dlpack.h in an include directory")
    if missing:
        raise WebsdError(f"{tvm_src} is not a complete TVM checkout (missing {missing[0]}): "
                         "run `doit tvm_checkout` (its submodules must be filled)")


def tvm_commit(tvm_src: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(tvm_src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


# --- argument lists ---------------------------------------------------------------------------------

def include_flags(tvm_src: Path) -> list[str]:
    return [f"-I{(Path(tvm_src) / d).resolve()}" for d in include_dirs(tvm_src)]


def compile_command(emcc: str, tvm_src: Path, name: str, out_obj: Path) -> list[str]:
    src = Path(tvm_src) / "web" / "emcc" / f"{name}.cc"
    return [emcc, *include_flags(tvm_src), *COMPILE_FLAGS, "-c", "-o", str(out_obj), str(src)]


def glue_link_command(emcc: str, tvm_src: Path, objects: Sequence[Path], out_js: Path) -> list[str]:
    """web/Makefile's tvmjs_runtime.wasm rule: writes ``out_js`` and the .wasm beside it."""
    preload = Path(tvm_src) / "web" / "emcc" / "preload.js"
    return [emcc, *include_flags(tvm_src), *COMPILE_FLAGS, "-o", str(out_js), *map(str, objects),
            *GLUE_LINK_FLAGS, "--pre-js", str(preload)]


def decorate_command(tvm_src: Path, emcc_js: Path, out_js: Path, mode: str) -> list[str]:
    """TVM's own decorate_as_wasi.py (run from the checkout, not copied): mode "cjs" or "es"."""
    return [sys.executable, str(Path(tvm_src) / "web" / "emcc" / "decorate_as_wasi.py"), str(emcc_js), str(out_js),
            mode]


NPM_INSTALL = ("install", "--no-audit", "--no-fund", "--ignore-scripts")


# --- reuse of the emcc steps ---------------------------------------------------------------------

def native_key(tvm_src: Path, emcc_ver: str) -> str | None:
    """Identity of the emcc steps' inputs; None when the checkout is not a git work tree (cannot be fingerprinted)."""
    sources = source_fingerprint(Path(tvm_src), NATIVE_PATHS)
    if sources == "missing":
        return None
    return sha256_json({"sources": sources, "emcc": emcc_ver, "include": include_dirs(tvm_src), "compile": COMPILE_FLAGS,
                        "glue": GLUE_LINK_FLAGS})


def _reusable_native(out_dir: Path, key: str | None) -> RuntimeArtifacts | None:
    """The previous build in ``out_dir`` when its emcc outputs are intact and were built from the same inputs."""
    if key is None:
        return None
    prev = RuntimeArtifacts.at(out_dir)
    info = prev.info()
    if info.get("native_key") != key:
        return None
    recorded = info.get("files", {})
    for path in prev.native_files():
        rel = str(path.relative_to(prev.dir))
        if not path.is_file() or recorded.get(rel) != sha256_file(path):
            return None
    return prev


# --- the stage --------------------------------------------------------------------------------------

# tools whose version decides the runtime's bytes: part of its remote-cache key (pipeline.remote_cache)
REMOTE_CACHE_TOOLS = ("emcc", "node")

def _copy_web(tvm_src: Path, dst: Path) -> None:
    shutil.copytree(Path(tvm_src) / "web", dst,
                    ignore=shutil.ignore_patterns("node_modules", "dist", "lib", ".git", GENERATED_IN_WEB_SRC))


def retarget_lockfile(lockfile: Path, registry: str) -> int:
    """Point every ``resolved`` tarball URL of an npm lockfile at ``registry`` (same path, same integrity hash).

    TVM's lockfiles name the registry their authors used; v0.21.0's has a tarball on a registry mirror that is
    unreachable from here, and npm fetches what ``resolved`` says. The tarball path is the same on every npm
    registry, so the configured one (``npm config get registry``) serves the exact locked versions. Rewrites the
    copy in the build directory only; returns how many URLs changed."""
    import json
    from urllib.parse import urlsplit

    if not lockfile.is_file() or not registry.startswith(("http://", "https://")):
        return 0
    base = registry.rstrip("/")
    origin = urlsplit(base)
    changed = 0

    def walk(node):
        nonlocal changed
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "resolved" and isinstance(value, str) and value.startswith(("http://", "https://")):
                    url = urlsplit(value)
                    if (url.scheme, url.netloc) != (origin.scheme, origin.netloc) and "/-/" in url.path:
                        node[key] = base + url.path
                        changed += 1
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    data = json.loads(lockfile.read_text())
    walk(data)
    if changed:
        lockfile.write_text(json.dumps(data, indent=2) + "\n")
    return changed


def npm_registry(npm: str, env: Mapping[str, str]) -> str:
    out = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True, env=env, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def logs_dir(out_dir: Path) -> Path:
    """Build logs live beside the output (a failed build's temp output is removed, its logs must stay)."""
    return out_dir.parent / f"{out_dir.name}.logs"


def build_tvmjs_runtime(tvm_src: Path, out_dir: Path, progress: Progress = None, *, jobs: int = 2,
                        nice: int = 10, env: Mapping[str, str] | None = None) -> RuntimeArtifacts:
    """Build the tvmjs runtime from ``tvm_src`` into ``out_dir`` (atomically; see module doc).

    ``progress(step)`` is called as each long step starts. Build logs go to ``<out_dir>.logs/`` (kept after a
    failure, overwritten by the next build). ~6-10 min on 2 cores, most of it the ASYNCIFY link; when only web/src
    or the npm files changed since the build in ``out_dir``, its objects and glue are reused (~20 s).
    """
    tvm_src, out_dir = Path(tvm_src).resolve(), Path(out_dir).resolve()
    env = tool_env(env)
    emcc, node, npm = (require_tool(t, env) for t in ("emcc", "node", "npm"))
    check_checkout(tvm_src)
    version = emcc_version(emcc, env)
    # taken before building: an edit made during the build leaves the result stale, not wrongly fresh
    fingerprint = source_fingerprint(tvm_src, RUNTIME_PATHS)
    key = native_key(tvm_src, version)
    previous = _reusable_native(out_dir, key)
    note = progress or (lambda step: None)
    log_dir = logs_dir(out_dir)
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    timings: dict[str, float] = {}

    def timed(step: str, fn: Callable[[], None]) -> None:
        note(step)
        start = time.monotonic()
        fn()
        timings[step] = round(time.monotonic() - start, 1)

    with atomic_path(out_dir) as work, scratch_dir(out_dir.parent, ".tvmjs-build.") as build:
        art = RuntimeArtifacts.at(work)
        (work / OBJECTS_DIR).mkdir(parents=True)

        def compile_all() -> None:
            # wasm_runtime.cc is ~90% of the work: run it beside the small ones
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                futures = [pool.submit(run_logged, niced(compile_command(emcc, tvm_src, name, obj), nice),
                                       log_dir / f"compile_{name}.log", env=env, what=f"emcc -c {name}.cc")
                           for name, obj in zip(RUNTIME_SOURCES, art.objects)]
                for fut in futures:
                    fut.result()

        def link_glue() -> None:
            emcc_js = build / "tvmjs_runtime.js"
            run_logged(niced(glue_link_command(emcc, tvm_src, art.objects, emcc_js), nice), log_dir / "link_glue.log",
                       cwd=build, env=env, what="emcc ASYNCIFY link of tvmjs_runtime")
            shutil.copy2(emcc_js.with_suffix(".wasm"), art.runtime_wasm)
            shutil.copy2(emcc_js, art.emcc_js)

        # the npm packages first: a registry problem fails in seconds, not after the ASYNCIFY link
        web = build / "web"
        _copy_web(tvm_src, web)
        (web / "dist").mkdir()
        retarget_lockfile(web / "package-lock.json", npm_registry(npm, env))
        # npm ci refuses TVM's out-of-sync lockfile; npm install resolves from package.json within the same ranges
        timed("npm install", lambda: run_logged([npm, *NPM_INSTALL], log_dir / "npm_install.log", cwd=web,
                                                env=env, what="npm install (web/)"))

        if previous is not None:
            note("reuse runtime objects + JS glue (their sources are unchanged)")
            for src_file, dst_file in zip(previous.native_files(), art.native_files()):
                shutil.copy2(src_file, dst_file)
        else:
            timed("compile runtime objects", compile_all)
            timed("link runtime + JS glue (ASYNCIFY)", link_glue)

        def decorate() -> None:
            run_logged(decorate_command(tvm_src, art.emcc_js, art.wasi_js, "cjs"), log_dir / "decorate.log",
                       env=env, what="decorate_as_wasi.py")
            run_logged(decorate_command(tvm_src, art.emcc_js, web / "src" / GENERATED_IN_WEB_SRC, "es"),
                       log_dir / "decorate.log", env=env, what="decorate_as_wasi.py")

        timed("wrap JS glue as WASI", decorate)
        timed("npm run bundle", lambda: run_logged(niced([npm, "run", "bundle"], nice), log_dir / "npm_bundle.log",
                                                   cwd=web, env=env, what="npm run bundle (rollup)"))
        shutil.copy2(web / "dist" / BUNDLE_NAME, art.bundle_js)

        node_version = subprocess.run([node, "--version"], capture_output=True, text=True, env=env).stdout.strip()
        write_json(art.stamp, {
            "tvm_src": str(tvm_src),
            "tvm_commit": tvm_commit(tvm_src),
            "source_fingerprint": fingerprint,
            "native_key": key,
            "native_reused": previous is not None,
            "emcc_version": version,
            "node_version": node_version,
            "compile_flags": list(COMPILE_FLAGS),
            "glue_link_flags": list(GLUE_LINK_FLAGS),
            "files": {str(p.relative_to(work)): sha256_file(p) for p in art.files() if p != art.stamp},
            "timings_s": timings,
        })
    return RuntimeArtifacts.load(out_dir)


def run(cfg: Config) -> RuntimeArtifacts:
    """Stage ``tvmjs_runtime`` with live progress."""
    from ..progress import StageProgress

    layout = Layout.from_config(cfg)
    with StageProgress("tvmjs_runtime") as progress:
        return build_tvmjs_runtime(layout.tvm_src, layout.tvmjs_dir, progress=progress.step)


def outputs(cfg: Config) -> list[Path]:
    return [runtime_stamp(Layout.from_config(cfg).tvmjs_dir)]


def fingerprint(cfg: Config) -> str:
    return source_fingerprint(Layout.from_config(cfg).tvm_src, RUNTIME_PATHS)


def cleans(cfg: Config) -> list[Path]:
    return [Layout.from_config(cfg).tvmjs_dir]
