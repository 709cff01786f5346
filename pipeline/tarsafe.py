"""Extracting a tar archive safely on every Python the project runs on."""
from __future__ import annotations

import tarfile
from pathlib import Path

from .errors import WebsdError


def extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    """``tar.extractall(dest)`` with the ``data`` filter: nothing lands outside ``dest``, no devices.

    Pythons before 3.11.4 (Debian 12's 3.11.2, the Containerfile's) have no extraction filters: there the members
    are checked first, more strictly (no absolute or ``..`` path or link target), then extracted.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for m in tar.getmembers():
        names = [m.name] + ([m.linkname] if m.issym() or m.islnk() else [])
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()) \
                or any(n.startswith("/") or ".." in Path(n).parts for n in names):
            raise WebsdError(f"{tar.name}: member {m.name!r} would land outside {dest} or is not a plain file; "
                             f"refusing to extract it (use Python >= 3.11.4 for tarfile's data filter)")
    tar.extractall(dest)
