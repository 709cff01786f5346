"""Atomic writes and content hashing: an interrupted build never leaves a target that looks complete."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it is renamed over ``target``.

    Works for a file or a directory written at the yielded path. On failure the temp is removed and
    whatever ``target`` held before is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # temps of earlier writers of this target that were killed (SIGKILL skips the cleanup below); there is no live
    # one, since one doit at a time writes a tree and each target has one task
    stale = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.tmp")  # mkdtemp's 8 random characters
    for old_tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        if stale.fullmatch(old_tmp.name):
            shutil.rmtree(old_tmp, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    work = tmp / target.name
    try:
        yield work
        if not work.exists():
            raise RuntimeError(f"stage wrote nothing to {work}")
        if target.is_dir() and not target.is_symlink():
            # a directory cannot be renamed over a non-empty one: move the old one aside first
            old = tmp / (target.name + ".old")
            os.replace(target, old)
            os.replace(work, target)
        else:
            os.replace(work, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory ``<parent>/<prefix>XXXXXXXX``, removed when the block ends; leftovers of earlier
    blocks with the same prefix (a SIGKILL skips the cleanup) are removed first. Callers hold the tree lock, so no
    live writer owns them."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(f"{glob.escape(prefix)}*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def versions_dir(link: Path) -> Path:
    """Where the versions behind ``link`` (see ``publish_versioned``) live: ``<link>-versions`` beside it."""
    return Path(link).parent / f"{Path(link).name}-versions"


@contextlib.contextmanager
def publish_versioned(link: Path, keep: int = 3) -> Iterator[Path]:
    """Yield a new empty directory; when the block succeeds, the symlink ``link`` points at it, switched by one
    ``rename``: a reader resolving ``link`` sees the previous version or this one, whole, never neither.

    Versions live in ``versions_dir(link)``, named by creation time. The ``keep`` newest stay (a request that
    resolved the link just before a switch is still reading its version); older ones, and the unfinished ones of
    killed builds, are removed. A plain directory at ``link`` (made before versioning) becomes a version once.
    """
    link = Path(link)
    versions = versions_dir(link)
    versions.mkdir(parents=True, exist_ok=True)
    for old in versions.glob(".new-*"):
        shutil.rmtree(old, ignore_errors=True)
    for old in link.parent.glob(f".{glob.escape(link.name)}.link-*"):
        old.unlink()
    name = f"{time.time_ns():020d}"  # sorts by age
    work = versions / f".new-{name}"
    work.mkdir()
    try:
        yield work
        os.rename(work, versions / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if link.is_dir() and not link.is_symlink():
        os.rename(link, versions / f"{0:020d}")  # the only moment without a link: once, on the first switch
    tmp_link = link.parent / f".{link.name}.link-{name}"
    os.symlink(os.path.relpath(versions / name, link.parent), tmp_link)
    os.replace(tmp_link, link)
    current = os.path.realpath(link)
    for old in sorted(p for p in versions.iterdir() if not p.name.startswith("."))[:-keep]:
        if os.path.realpath(old) != current:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(target: Path, mode: str = "w") -> Iterator:
    """Open a temp file for writing; it replaces ``target`` only if the block finishes."""
    with atomic_path(target) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_json(target: Path, data) -> None:
    with atomic_write(target) as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
