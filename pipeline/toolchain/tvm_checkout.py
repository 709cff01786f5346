"""Stage ``tvm_checkout``: Apache TVM at a pinned ref, with the submodules later stages need.

The checkout lives in ``cache/tvm/src``. It is fetched shallowly from ``tvm.git`` (or ``tvm.mirror``), and its
``3rdparty/tvm-ffi`` submodule comes from its own remote or, when that is unreachable (air-gapped machines), from
the ``apache-tvm-ffi`` sdist of the version the pinned TVM needs, which ships the same sources plus dlpack.

Staleness is by content, not by time: ``source_fingerprint`` hashes the commit plus any local edits under the paths a
stage reads, so a TVM developer's edit in ``web/`` re-runs the runtime bundling but not the C++ build.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import versions
from ..config import Config
from ..errors import WebsdError
from ..fsutil import atomic_path, read_json, scratch_dir, write_json
from ..layout import Layout
from ..tarsafe import extract_all

TVM_FFI_SUBMODULE = "3rdparty/tvm-ffi"
# The paths of a checkout that the C++ build and the Python package read; edits elsewhere (web/, docs/, tests/)
# leave a wheel substitution valid and the libtvm build untouched.
BUILD_PATHS = ("CMakeLists.txt", "cmake", "src", "include", "python", "3rdparty", "licenses", "version.py")

_SHA = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class CheckoutResult:
    src: Path
    commit: str
    ref: str
    ffi_source: str  # "git" or "sdist <version>"
    executed: bool  # False: already at that commit, nothing fetched


def _git(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise WebsdError("git not found: install git (./setup.sh installs the Debian packages the build needs)") \
            from None
    except subprocess.TimeoutExpired:
        raise WebsdError(f"git {args[0]} timed out after {timeout:.0f}s; check the remote or set tvm.mirror") from None
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, ["git", *args], proc.stdout, proc.stderr)
    return proc


def _last_line(text: str) -> str:
    """The line of a tool's output that says what went wrong: git's first ``fatal:``/``error:`` line (its last
    line is often advice such as "and the repository exists."), else the last line."""
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith(("fatal:", "error:"))]
    return errors[0] if errors else lines[-1] if lines else "no output"


def _is_local_path(url: str) -> bool:
    """A mirror given as a path (not ``scheme://...`` nor scp-like ``host:path``)."""
    return "://" not in url and not re.match(r"[\w.@-]+:", url)


def check_mirrors(cfg: Config) -> None:
    """Every mirror configured as a local path exists: a typo would otherwise fall back to the remote or the sdist
    without a word, or fail later with git's own wording."""
    named = [("tvm.mirror", cfg.tvm.mirror, "apache/tvm"), ("tvm.ffi_mirror", cfg.tvm.ffi_mirror, "apache/tvm-ffi")]
    named += [(f"tvm.submodule_mirrors {name}=", url, name) for name, url in cfg.tvm.submodule_mirror_map().items()]
    for key, url, repo in named:
        if url and _is_local_path(url) and not Path(url).is_dir():
            raise WebsdError(f"{key} {url!r} is not a directory; set it to a git mirror of {repo} on this machine "
                             f"(or unset it to fetch from the remote)")


def resolve_ref(remote: str, ref: str) -> tuple[str, str]:
    """Return ``(commit, refspec)`` of ``ref`` on ``remote``; tags win over branches of the same name.

    A full commit id resolves to itself without asking the remote.
    """
    if re.fullmatch(r"[0-9a-f]{40}", ref):
        return ref, ref
    candidates = [f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref]
    proc = _git("ls-remote", remote, *candidates[:3], check=False, timeout=120)
    if proc.returncode != 0:
        raise WebsdError(
            f"cannot reach TVM remote {remote!r} ({_last_line(proc.stderr)}); set tvm.mirror or WEBSD_TVM_MIRROR "
            f"to a local TVM mirror, or fix tvm.git"
        )
    found = dict(reversed(line.split("\t")) for line in proc.stdout.splitlines() if "\t" in line)
    for name in candidates[:3]:
        if name in found:
            return found[name], name.removesuffix("^{}")
    if _SHA.match(ref):
        return ref, ref  # an abbreviated commit: fetch_commit checks it exists
    raise WebsdError(f"TVM ref {ref!r} not found on {remote!r}; set tvm.ref to an existing tag, branch or commit")


def _has_local_edits(src: Path) -> bool:
    """Edits a user made: the files our own patch step changed (pipeline/toolchain/versions.py) do not count."""
    ours = set()
    for diff in _applied_patches(src).values():
        ours |= {line[6:] for line in diff.splitlines() if line.startswith("+++ b/")}
    out = _git("status", "--porcelain", "--untracked-files=no", cwd=src).stdout
    return any(line[3:] not in ours for line in out.splitlines() if line.strip())


def fetch_commit(src: Path, remote: str, refspec: str, commit: str) -> str:
    """Make ``src`` a git work tree at ``commit`` (fetched shallowly from ``remote``); return the full commit id."""
    if not (src / ".git").exists():
        _git("init", "-q", str(src))
    have = _git("rev-parse", "--verify", "-q", f"{commit}^{{commit}}", cwd=src, check=False)
    if have.returncode != 0:
        spec = refspec if refspec == commit else f"+{refspec}:{refspec.removesuffix('^{}')}"
        proc = _git("fetch", "-q", "--depth", "1", remote, spec, cwd=src, check=False, timeout=1800)
        if proc.returncode != 0 and refspec == commit:
            # servers refuse a bare commit id unless it is advertised: fetch all branches and tags instead
            proc = _git("fetch", "-q", remote, "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*",
                        cwd=src, check=False, timeout=3600)
        if proc.returncode != 0:
            raise WebsdError(f"git fetch of {refspec} from {remote!r} failed ({_last_line(proc.stderr)}); "
                             f"check tvm.ref and tvm.mirror")
    full = _git("rev-parse", "--verify", "-q", f"{commit}^{{commit}}", cwd=src, check=False)
    if full.returncode != 0:
        raise WebsdError(f"commit {commit} not found after fetching from {remote!r}; set tvm.ref to a full commit id")
    full_id = full.stdout.strip()
    _git("-c", "advice.detachedHead=false", "checkout", "-q", "--force", full_id, cwd=src)
    return full_id


def _submodule_commit(src: Path, path: str) -> str | None:
    out = _git("ls-tree", "HEAD", path, cwd=src).stdout.split()
    return out[2] if len(out) >= 3 and out[1] == "commit" else None


def _fill_from_sdist(dest: Path, version: str) -> None:
    """Unpack the ``apache-tvm-ffi`` sdist into ``dest``: same sources as the submodule, dlpack included."""
    # beside dest, not in /tmp: a killed run's download is removed by the next one (scratch_dir)
    with scratch_dir(dest.parent, ".tvm-ffi-sdist.") as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "apache-tvm-ffi",
             "--disable-pip-version-check", "-q", "-d", tmp, f"apache-tvm-ffi=={version}"],
            capture_output=True, text=True,
        )
        archives = list(Path(tmp).glob("apache_tvm_ffi-*.tar.gz"))
        if proc.returncode != 0 or not archives:
            raise WebsdError(
                f"the tvm-ffi submodule's remote is unreachable and pip could not download the apache-tvm-ffi=={version} "
                f"sdist ({_last_line(proc.stderr)}); make PyPI reachable or mirror apache/tvm-ffi"
            )
        with tarfile.open(archives[0]) as tar:
            extract_all(tar, Path(tmp))
        (root,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if not (root / "3rdparty" / "dlpack" / "include" / "dlpack" / "dlpack.h").exists():
            raise WebsdError(f"apache-tvm-ffi=={version} sdist has no 3rdparty/dlpack; pick another tvm_ffi version "
                             f"in pipeline/toolchain/versions.py")
        with atomic_path(dest) as work:
            shutil.copytree(root, work)


def submodule_name(repo: Path, path: str) -> str:
    """The .gitmodules name of the submodule at ``path`` (v0.21 names ``3rdparty/dmlc-core`` "dmlc-core")."""
    proc = _git("config", "-f", ".gitmodules", "--get-regexp", r"^submodule\..*\.path$", cwd=repo, check=False)
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        if value.strip() == path:
            return key[len("submodule."):-len(".path")]
    return path


def submodule_url(repo: Path, path: str) -> str:
    """The URL .gitmodules gives the submodule at ``path``."""
    name = submodule_name(repo, path)
    return _git("config", "-f", ".gitmodules", "--get", f"submodule.{name}.url", cwd=repo, check=False).stdout.strip()


def repo_name(url: str) -> str:
    """``https://github.com/dmlc/dmlc-core.git`` -> ``dmlc-core``: the key of tvm.submodule_mirrors."""
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


def _update_submodule(repo: Path, path: str, url: str | None) -> bool:
    """``git submodule update --init`` of one submodule, from ``url`` instead of .gitmodules' when given."""
    name = submodule_name(repo, path)
    _git("submodule", "init", "-q", path, cwd=repo, check=False)
    if url:
        _git("config", f"submodule.{name}.url", url, cwd=repo, check=False)
    # local mirrors are plain paths: allow the file transport git refuses for submodules by default
    proc = _git("-c", "protocol.file.allow=always", "submodule", "update", "--init", path, cwd=repo,
                check=False, timeout=1800)
    return proc.returncode == 0


def init_submodules(src: Path, tvm_version: str, mirror_of: Callable[[str], str]) -> dict[str, str]:
    """Fill the submodules ``versions.py`` lists for this release (besides tvm-ffi), each from its mirror
    (``tvm.submodule_mirrors``, keyed by repository name) or its own remote. Returns ``{path: commit}``."""
    filled = {}
    for path in versions.release(tvm_version).submodules:
        want = _submodule_commit(src, path)
        if want is None:
            raise WebsdError(f"pipeline/toolchain/versions.py lists submodule {path} for TVM {tvm_version}, but the checkout "
                             f"has no such submodule; fix the entry")
        dest = src / path
        have = _git("rev-parse", "HEAD", cwd=dest, check=False).stdout.strip() if (dest / ".git").exists() else ""
        if have != want:
            url = submodule_url(src, path)
            mirror = mirror_of(repo_name(url))
            if not _update_submodule(src, path, mirror or None):
                raise WebsdError(f"cannot fetch TVM submodule {path} from {mirror or url!r}; set "
                                 f"tvm.submodule_mirrors (e.g. WEBSD_TVM_SUBMODULE_MIRRORS="
                                 f"{repo_name(url)}=/path/to/{repo_name(url)}.git) to a mirror that has {want[:12]}")
        filled[path] = want
    return filled


BACKPORT_STAMP = ".git/websd-backports.json"
# patches this project owns, for release bugs no upstream commit fixes on its own (named in pipeline/toolchain/versions.py)
PATCH_DIR = Path(__file__).resolve().parent / "tvm_patches"


def patch_files(tvm_version: str) -> list[Path]:
    """This project's patch files for a TVM version: an edit of one makes tvm_checkout stale."""
    return [PATCH_DIR / name for name in versions.release(tvm_version).patches]


def _applied_patches(src: Path) -> dict[str, str]:
    """What the patch step applied to ``src`` last: name -> its diff."""
    return dict(read_json(src / BACKPORT_STAMP, {}).get("applied", {}))


def _wanted_patches(src: Path, remote: str, commits: Iterable[str], patches: Iterable[str]) -> dict[str, str]:
    """name -> diff of each upstream commit (fetched from the TVM remote) and each of our patch files, in order."""
    wanted = {}
    for commit in commits:
        parent = _git("rev-parse", "--verify", "-q", f"{commit}^^{{commit}}", cwd=src, check=False)
        if parent.returncode != 0:
            proc = _git("fetch", "-q", "--depth", "2", remote, commit, cwd=src, check=False, timeout=1800)
            if proc.returncode != 0:
                raise WebsdError(f"cannot fetch backport commit {commit[:12]} from {remote!r} "
                                 f"({_last_line(proc.stderr)}); set tvm.mirror to a TVM mirror that has it")
        wanted[commit] = _git("diff", "--binary", f"{commit}^", commit, cwd=src).stdout
    for name in patches:
        path = PATCH_DIR / name
        if not path.is_file():
            raise WebsdError(f"pipeline/toolchain/versions.py names the TVM patch {name}, which is not in pipeline/toolchain/tvm_patches/")
        wanted[f"tvm_patches/{name}"] = path.read_text()
    return wanted


def apply_backports(src: Path, remote: str, commits: Iterable[str], patches: Iterable[str] = ()) -> list[str]:
    """The patch step: apply upstream commits' diffs (``backports``) and this project's own patch files
    (``patches``, in ``pipeline/toolchain/tvm_patches/``) to the work tree with ``git apply``, each unless it is applied.

    The commits come from the TVM remote (or mirror), so nothing of TVM is stored in this project; our own patches
    are a few changed lines each. The result is local edits that ``source_fingerprint`` hashes like any other; the
    diffs are recorded in ``.git/websd-backports.json`` (so ``_has_local_edits`` knows these edits are ours, and a
    patch dropped from versions.py can be taken out again) and their names in the checkout stamp. Whether a diff
    is applied is checked on the files themselves (a ``git checkout --force`` undoes it)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    wanted = _wanted_patches(src, remote, commits, patches)
    for name, diff in reversed(list(_applied_patches(src).items())):
        if name not in wanted:  # dropped from versions.py since the last run: taken out again
            subprocess.run(["git", "apply", "--reverse", "-"], cwd=src, input=diff, text=True, capture_output=True,
                           env=env)
    for name, diff in wanted.items():
        if subprocess.run(["git", "apply", "--reverse", "--check", "-"], cwd=src, input=diff, text=True,
                          capture_output=True, env=env).returncode == 0:
            continue  # applied already
        proc = subprocess.run(["git", "apply", "-"], cwd=src, input=diff, text=True, capture_output=True, env=env)
        if proc.returncode != 0:
            what = f"backport {name[:12]}" if name in commits else f"patch pipeline/toolchain/{name}"
            raise WebsdError(f"{what} does not apply to TVM {head_commit(src)[:12]} "
                             f"({_last_line(proc.stderr)}); fix backports/patches in pipeline/toolchain/versions.py")
    record = {"head": head_commit(src), "applied": wanted}
    if read_json(src / BACKPORT_STAMP, {}) != record:
        write_json(src / BACKPORT_STAMP, record)
    return list(wanted)


def init_tvm_ffi(src: Path, tvm_version: str, ffi_mirror: str = "", dlpack_mirror: str = "") -> str:
    """Fill ``3rdparty/tvm-ffi`` and its dlpack: from git (``tvm.ffi_mirror`` or the submodule's own remote) when
    reachable, else from the ``apache-tvm-ffi`` sdist. Returns where they came from."""
    dest = src / TVM_FFI_SUBMODULE
    if _submodule_commit(src, TVM_FFI_SUBMODULE) is None:
        return "none"  # this TVM has no tvm-ffi submodule (< 0.22)
    stamp = dest / ".websd-source"
    if stamp.exists():
        previous = stamp.read_text().strip()
        if not (ffi_mirror and previous.startswith("sdist")):
            return previous
        shutil.rmtree(dest)  # a mirror is now configured: replace the sdist stand-in by the real submodule
        dest.mkdir()
    rel = versions.release(tvm_version)
    if _update_submodule(src, TVM_FFI_SUBMODULE, ffi_mirror or None):
        source = "git"
        dlpack = dest / "3rdparty" / "dlpack"
        if not _update_submodule(dest, "3rdparty/dlpack", dlpack_mirror or None) or not (dlpack / "include").exists():
            # dlpack is one header; the sdist of the matching tvm-ffi release ships it
            if not rel.tvm_ffi:
                raise WebsdError(f"{dest}/3rdparty/dlpack is unreachable and pipeline/toolchain/versions.py names no "
                                 f"apache-tvm-ffi sdist for TVM {tvm_version}; add one")
            with scratch_dir(dest.parent, ".tvm-ffi-dlpack.") as tmp:
                _fill_from_sdist(tmp / "ffi", rel.tvm_ffi)
                shutil.rmtree(dlpack, ignore_errors=True)
                shutil.copytree(Path(tmp) / "ffi" / "3rdparty" / "dlpack", dlpack)
            source = f"git, dlpack from sdist {rel.tvm_ffi}"
    else:
        if not rel.tvm_ffi:
            raise WebsdError(f"{TVM_FFI_SUBMODULE} is unreachable and pipeline/toolchain/versions.py names no apache-tvm-ffi "
                             f"sdist for TVM {tvm_version}; set tvm.ffi_mirror or add one")
        _git("submodule", "deinit", "-q", "--force", TVM_FFI_SUBMODULE, cwd=src, check=False)
        shutil.rmtree(dest, ignore_errors=True)
        _fill_from_sdist(dest, rel.tvm_ffi)
        source = f"sdist {rel.tvm_ffi}"
    stamp.write_text(source + "\n")
    return source


def run(cfg: Config, log: Callable[[str], None] = print) -> CheckoutResult:
    """Bring ``cache/tvm/src`` to ``tvm.ref``; refuse to throw away local edits in it."""
    check_mirrors(cfg)
    layout = Layout.from_config(cfg)
    src, remote, ref = layout.tvm_src, cfg.tvm.remote, cfg.tvm.resolved_ref
    rel = versions.release(cfg.tvm.version)
    ffi_mirror, dlpack_mirror = cfg.tvm.submodule_mirror("tvm-ffi"), cfg.tvm.submodule_mirror("dlpack")
    stamp = read_json(layout.tvm_checkout_stamp, {})
    if stamp.get("ref") == ref and stamp.get("remote") == remote and (src / ".git").exists() \
            and (_SHA.match(ref) or ref == f"v{cfg.tvm.version}" or stamp.get("refspec", "").startswith("refs/tags/")):
        # a tag or commit never moves: no need to ask the remote again
        commit, refspec = stamp["commit"], stamp["refspec"]
        executed = False
    else:
        commit, refspec = resolve_ref(remote, ref)
        if (src / ".git").exists() and _has_local_edits(src) and not stamp.get("commit", "").startswith(commit):
            raise WebsdError(f"{src} has local edits; commit or stash them before switching tvm.ref to {ref!r}")
        log(f"fetching TVM {ref} ({commit[:12]}) from {remote}")
        if (src / ".git").exists():
            commit = fetch_commit(src, remote, refspec, commit)
        else:
            # a fresh checkout is built aside and renamed in, so an interrupted clone leaves no half tree
            with atomic_path(src) as work:
                commit = fetch_commit(work, remote, refspec, commit)
                init_tvm_ffi(work, cfg.tvm.version, ffi_mirror, dlpack_mirror)
                init_submodules(work, cfg.tvm.version, cfg.tvm.submodule_mirror)
                apply_backports(work, remote, rel.backports, rel.patches)
        executed = True
    ffi_source = init_tvm_ffi(src, cfg.tvm.version, ffi_mirror, dlpack_mirror)
    submodules = init_submodules(src, cfg.tvm.version, cfg.tvm.submodule_mirror)
    backports = apply_backports(src, remote, rel.backports, rel.patches)
    record = {"remote": remote, "ref": ref, "refspec": refspec, "commit": commit, "ffi_mirror": ffi_mirror,
              "ffi_source": ffi_source, "submodules": submodules, "backports": backports}
    if executed or any(stamp.get(k) != v for k, v in record.items()):
        write_json(layout.tvm_checkout_stamp, record)
        executed = True
    return CheckoutResult(src=src, commit=commit, ref=ref, ffi_source=ffi_source, executed=executed)


def head_commit(src: Path) -> str:
    return _git("rev-parse", "HEAD", cwd=src).stdout.strip()


def changed_files(src: Path, paths: Iterable[str] = ()) -> list[str]:
    """Tracked files that differ from HEAD and untracked files under ``paths`` (all paths when empty)."""
    out = _git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=all", "--",
               *paths, cwd=src).stdout
    files = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if not entry:
            continue
        status, name = entry[:2], entry[3:]
        if status[0] in "RC":
            next(entries, None)  # the rename's source path
        files.append(name)
    return sorted(files)


def source_fingerprint(src: Path, paths: Iterable[str] = ()) -> str:
    """Hash of the checkout's commit plus the content of every local edit under ``paths``.

    Equal fingerprints mean a stage that reads only ``paths`` would see the same sources. Costs one
    ``git status`` (tens of milliseconds on TVM), so doit can call it on every run.
    """
    if not (src / ".git").exists():
        return "missing"
    paths = tuple(paths)
    h = hashlib.sha256(head_commit(src).encode())
    for name in changed_files(src, paths):
        h.update(name.encode() + b"\0")
        path = src / name
        if path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            h.update(b"<deleted>")
    # the tvm-ffi submodule is filled from git or an sdist: its origin is part of what was built
    ffi_stamp = src / TVM_FFI_SUBMODULE / ".websd-source"
    if ffi_stamp.exists() and (not paths or any(p in ("3rdparty", TVM_FFI_SUBMODULE) for p in paths)):
        h.update(ffi_stamp.read_bytes())
    return h.hexdigest()


def is_unmodified_release(src: Path, tvm_version: str) -> bool:
    """True when the checkout is exactly the release tag of ``tvm_version`` with no edits the build would see."""
    tag = _git("rev-parse", "--verify", "-q", f"refs/tags/v{tvm_version}^{{commit}}", cwd=src, check=False)
    return tag.returncode == 0 and tag.stdout.strip() == head_commit(src) and not changed_files(src, BUILD_PATHS)


# --- the stage (pipeline.stages) --------------------------------------------------------------------------------

CONFIG_KEYS = ("tvm.version", "tvm.ref", "tvm.git", "tvm.mirror", "tvm.ffi_mirror", "tvm.submodule_mirrors")


def inputs(cfg: Config) -> list[Path]:
    return patch_files(cfg.tvm.version)


def outputs(cfg: Config) -> list[Path]:
    return [Layout.from_config(cfg).tvm_checkout_stamp]


def fingerprint(cfg: Config) -> bool:
    return (Layout.from_config(cfg).tvm_src / ".git").exists()


def cleans(cfg: Config) -> list[Path]:
    layout = Layout.from_config(cfg)
    return [layout.tvm_src, layout.tvm_checkout_stamp]
