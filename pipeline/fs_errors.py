"""File-system failures a user can fix (a full disk, a read-only or unusable directory) as one ``WebsdError`` line
that names the path, the free space and the fix; anything else is left alone (a bug keeps its traceback)."""
from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from .errors import WebsdError

# below this much free space a failed stage is reported as "disk full" even when the tool said something else
# (LLVM: "IO failure on output stream", sqlite: "database or disk is full")
LOW_SPACE_BYTES = 64 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def free_bytes(path: Path) -> int | None:
    """Free space on the file system holding ``path`` (its nearest existing parent), None if unknown."""
    path = Path(path).absolute()
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= 1 << 20 else f"{n / 1024:.0f} KB"


def disk_full(path: Path, needed: int | None = None) -> WebsdError:
    free = free_bytes(path)
    need = f"; about {_mb(needed)} needed" if needed else ""
    have = f" ({_mb(free)} free)" if free is not None else ""
    return WebsdError(f"disk full writing {path}{have}{need}; free space there (or set paths.cache to a bigger disk) "
                      f"and run doit again: finished stages are kept")


def explain(exc: BaseException, cache_dir: Path) -> WebsdError | None:
    """The one-line error for ``exc`` if it is a file-system failure a user can fix, else None."""
    if isinstance(exc, WebsdError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "full" in text:
            return disk_full(Path(cache_dir) / ".doit.sqlite3")
        if "readonly" in text or "unable to open" in text:
            return not_writable(Path(cache_dir), text)
        return None
    if not isinstance(exc, OSError):
        return None
    where = Path(exc.filename) if exc.filename else Path(cache_dir)
    if exc.errno in _FULL:
        return disk_full(where)
    if exc.errno in _NOT_WRITABLE:
        return not_writable(where, exc.strerror or str(exc))
    if exc.errno in (errno.ENOENT, errno.ENOTDIR) and exc.filename and Path(cache_dir) in (where, *where.parents):
        return WebsdError(f"cannot use the cache directory {cache_dir} ({exc.strerror}: {where}); set paths.cache "
                          f"to a directory that can be created")
    return None


def not_writable(path: Path, reason: str) -> WebsdError:
    return WebsdError(f"cannot write {path} ({reason}); make it writable or set paths.cache (WEBSD_PATHS_CACHE) to "
                      f"a writable directory")


def low_space(cache_dir: Path) -> WebsdError | None:
    """A "disk full" error when the cache's file system is (nearly) full: why a child tool failed without saying."""
    free = free_bytes(cache_dir)
    return disk_full(Path(cache_dir)) if free is not None and free < LOW_SPACE_BYTES else None
