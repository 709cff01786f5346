"""Every bad input a user can give gets one line: a non-zero exit, one ``error:`` line naming the fix, no traceback,
the message printed once, and nothing already built lost (a finished site and model outputs in the cache stay
byte-identical). Each case runs the real ``doit`` (or ``python -m pipeline.*``) command a user would type.

A full disk and a read-only cache are real file systems: small tmpfs mounts (needs root; otherwise those cases skip,
saying so). The TVM mirror cases use small local git repositories, never the network."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT  # tests/conftest.py

from pipeline.fsutil import publish_versioned

# files the cache already holds in every case: none may change or go
BUILT = {"models/tiny/float32-64-tvm-v0.26.0/params/unet/params_shard_0.bin": b"\x01" * 4096,
         "models/tiny/weights/model_index.json": b"{}"}
SITE = {"index.html": b"<p>the last complete site</p>", "model/manifest.json": b'{"files": {}}'}


def _snapshot(cache: Path) -> dict[str, str]:
    """sha256 of every built file: model outputs, and the site the ``site`` link names."""
    files = {}
    for top in ("models", "site"):
        base = (cache / top).resolve()
        for p in sorted(base.rglob("*")) if base.is_dir() else []:
            if p.is_file():
                files[f"{top}/{p.relative_to(base)}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def _fill_cache(cache: Path) -> None:
    for rel, data in BUILT.items():
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_bytes(data)
    with publish_versioned(cache / "site") as work:
        for rel, data in SITE.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(data)


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}): the full-disk and read-only "
                    f"cases need one")


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    run = lambda *a: subprocess.run(["git", *a], cwd=path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (path / "README").write_text("not TVM")
    run("add", "README")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    return path


# id: (command after `python -m`, extra environment, what to prepare, a fragment of the one line)
# prepare(tmp, cache) returns extra environment (or None); the cache already holds BUILT and SITE.
def _port_in_use(tmp, cache):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    _HELD.append(sock)
    return {"WEBSD_WEB_PORT": str(sock.getsockname()[1])}


def _read_only_cache(tmp, cache):
    ro = tmp / "ro"
    _mount_tmpfs(ro, "size=4m")
    _fill_cache(ro / "cache")
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    _MOUNTS.append(ro)
    return {"WEBSD_PATHS_CACHE": str(ro / "cache")}


def _full_disk(tmp, cache):
    full = tmp / "full"
    _mount_tmpfs(full, "size=3m")
    _MOUNTS.append(full)
    _fill_cache(full / "cache")
    free = os.statvfs(full).f_bavail * os.statvfs(full).f_frsize
    (full / "filler").write_bytes(b"\0" * max(0, free - 400 * 1024))  # room for doit's database, not the weights
    return {"WEBSD_PATHS_CACHE": str(full / "cache")}


def _cache_under_a_file(tmp, cache):
    (tmp / "a-file").write_text("x")
    return {"WEBSD_PATHS_CACHE": str(tmp / "a-file" / "cache")}


def _lock_held(tmp, cache):
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    f = open(cache / ".doit.lock", "a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write("4242")
    f.flush()
    _HELD.append(f)
    return {"WEBSD_LOCK_WAIT": "0"}


def _bad_user_config(tmp, cache):
    (tmp / "xdg" / "websd").mkdir(parents=True)
    (tmp / "xdg" / "websd" / "config.toml").write_text("[tvm\nmirror = 1\n")
    return {}


def _folder_without_vae(tmp, cache):
    folder = tmp / "my-model"
    for component in ("text_encoder", "unet"):
        (folder / component).mkdir(parents=True)
        (folder / component / "config.json").write_text("{}")
    return {"WEBSD_MODEL_NAME": str(folder)}


def _corrupt_model_json(tmp, cache):
    folder = tmp / "broken-model"
    for component in ("text_encoder", "unet", "vae"):
        (folder / component).mkdir(parents=True)
        (folder / component / "config.json").write_text("{not json")
    return {"WEBSD_MODEL_NAME": str(folder)}


def _mirror_not_git(tmp, cache):
    (tmp / "empty-dir").mkdir()
    return {"WEBSD_TVM_MIRROR": str(tmp / "empty-dir")}


def _mirror_without_the_ref(tmp, cache):
    return {"WEBSD_TVM_MIRROR": str(_git_repo(tmp / "small.git")), "WEBSD_TVM_REF": "v9.9.9"}


_HELD: list = []
_MOUNTS: list[Path] = []

CASES = {
    "port out of range": (["doit", "serve", "web.port=99999"], None, "web.port must be a TCP port"),
    "negative port": (["doit", "serve", "web.port=-1"], None, "web.port must be a TCP port"),
    "port not a number": (["doit", "serve", "web.port=http"], None,
                          "web.port (from the doit command line) must be an integer"),
    "port in use": (["doit", "serve"], _port_in_use, "Address already in use); set web.port=<free port>"),
    "unknown host": (["doit", "serve", "web.host=no-such-host.invalid"], None, "unknown host"),
    "serve without a site": (["doit", "serve"], lambda t, c: {"WEBSD_PATHS_CACHE": str(t / "empty-cache")},
                             "run `doit` first"),
    "read-only cache (build)": (["doit", "weights"], _read_only_cache, "Read-only file system); make it writable"),
    "read-only cache (list)": (["doit", "list"], _read_only_cache, "make it writable or set paths.cache"),
    "cache under a file": (["doit", "weights"], _cache_under_a_file, "set paths.cache to a directory that can be"),
    "full disk": (["doit", "weights"], _full_disk, "disk full writing"),
    "another doit holds the tree": (["doit", "weights"], _lock_held, "another doit is running on this tree (pid 4242)"),
    "nonexistent tvm.mirror": (["doit", "tvm_checkout", "tvm.mirror=/nonexistent/tvm.git"], None,
                               "tvm.mirror '/nonexistent/tvm.git' is not a directory; set it to a git mirror of "
                               "apache/tvm"),
    "nonexistent tvm.ffi_mirror": (["doit", "tvm_checkout", "tvm.ffi_mirror=/nonexistent/ffi.git"], None,
                                   "tvm.ffi_mirror '/nonexistent/ffi.git' is not a directory"),
    "nonexistent submodule mirror": (["doit", "tvm_checkout", "tvm.submodule_mirrors=rang=/nonexistent/rang.git"],
                                     None, "tvm.submodule_mirrors rang= '/nonexistent/rang.git' is not a directory"),
    "malformed submodule mirrors": (["doit", "list", "tvm.submodule_mirrors=rang"], None,
                                    "expected name=path pairs separated by commas"),
    "tvm.mirror not a git repository": (["doit", "tvm_checkout"], _mirror_not_git,
                                        "fatal: '"),
    "tvm.ref not on the mirror": (["doit", "tvm_checkout"], _mirror_without_the_ref,
                                  "TVM ref 'v9.9.9' not found"),
    "unknown config key": (["doit", "model.colour=red"], None, "unknown config key 'model.colour'"),
    "bad dtype": (["doit", "model.dtype=float64"], None, "model.dtype (from the doit command line) must be one"),
    "bad image size": (["doit", "model.image_size=65"], None, "model.image_size 65 must be a positive multiple of 16"),
    "bad image height": (["doit", "model.height=40"], None, "model.height 40 must be a positive multiple of 16"),
    "negative image width": (["doit", "model.width=-64"], None, "model.width must be a number of pixels"),
    "LoRA file missing": (["doit", "model.lora=/nonexistent/style.safetensors:0.8"], None,
                          "config model.lora: /nonexistent/style.safetensors is not a file"),
    "seed not a number": (["doit", "model.seed=abc"], None,
                          "model.seed (from the doit command line) must be an integer"),
    "unknown model": (["doit", "model.name=/nonexistent/model"], None, "is neither a registered model"),
    "model folder without a component": (["doit", "weights"], _folder_without_vae, "has no vae/config.json"),
    "model folder with corrupt json": (["doit", "weights"], _corrupt_model_json, "is not valid JSON"),
    "unsupported tvm.version": (["doit", "tvm.version=0.1.0"], None,
                                "tvm.version '0.1.0' is not in pipeline/toolchain/versions.py"),
    "bad tvm.build": (["doit", "tvm.build=magic"], None, "tvm.build (from the doit command line) must be one"),
    "bad link.profile": (["doit", "link.profile=fast"], None, "link.profile (from the doit command line) must be one"),
    "bad webgpu.limits": (["doit", "webgpu.limits=huge"], None,
                          "webgpu.limits (from the doit command line) must be one"),
    "negative tvm.build_jobs": (["doit", "tvm.build_jobs=-2"], None, "tvm.build_jobs must be 0"),
    "unknown webgpu.variants": (["doit", "webgpu.variants=tensor-cores"], None,
                                "webgpu.variants: 'tensor-cores' is not a kernel set"),
    "subgroup matrices on float32": (["doit", "webgpu.variants=subgroup-matrix"], None,
                                     "build with model.dtype=float16, or drop webgpu.variants"),
    "user config not TOML": (["doit", "list"], _bad_user_config, "is not valid TOML"),
    "run_stage unknown stage": (["pipeline.run_stage", "bogus"], None, "unknown stage"),
}


@pytest.fixture
def case_env(tmp_path):
    yield
    for held in _HELD:
        held.close()
    _HELD.clear()
    for mount in reversed(_MOUNTS):
        subprocess.run(["umount", "-l", str(mount)], check=False)
    _MOUNTS.clear()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_loses_nothing(case, tmp_path, case_env):
    command, prepare, fragment = CASES[case]
    cache = tmp_path / "cache"
    _fill_cache(cache)
    before = _snapshot(cache)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSD_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), WEBSD_PATHS_CACHE=str(cache))
    env.update((prepare(tmp_path, cache) if prepare else None) or {})
    proc = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, out  # one line, printed once
    assert fragment in errors[0], out
    used = Path(env["WEBSD_PATHS_CACHE"])  # a case's own cache (read-only, full disk) was filled the same way
    if used != cache and used.exists():
        assert _snapshot(used) in (before, {}), "a bad input changed what was built"
    assert _snapshot(cache) == before, "a bad input changed what was built"
    assert (cache / "site" / "index.html").read_bytes() == SITE["index.html"]


def test_the_table_covers_at_least_twenty_cases():
    assert len(CASES) >= 20
