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
