"""Running external tools (cmake, ninja, emcc, npm, pip): find them with a hint that names the fix, run them with
their output in a log file, and turn a failure into one line that names the log."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import WebsdError

# how to get a tool that is missing
TOOL_HINTS = {
    "emcc": "run ./setup.sh (installs Debian's emscripten)",
    "node": "run ./setup.sh (installs Debian's nodejs)",
    "npm": "run ./setup.sh (installs Debian's npm)",
    "cmake": "run ./setup.sh (installs cmake >= 3.26 from PyPI into .venv)",
    "ninja": "run ./setup.sh (installs ninja from PyPI into .venv)",
}


def require_tool(name: str, env: Mapping[str, str] | None = None) -> str:
    """Absolute path of ``name``: the venv's bin directory first (cmake and ninja come from PyPI there), then
    PATH; else a one-line WebsdError naming how to install it."""
    venv_tool = Path(sys.executable).parent / name
    if venv_tool.exists():
        return str(venv_tool)
    path = shutil.which(name, path=(env if env is not None else os.environ).get("PATH", ""))
    if not path:
        raise WebsdError(f"{name} not found: {TOOL_HINTS.get(name, 'install it and put it on PATH')}")
    return path


def niced(cmd: Sequence[str], nice: int) -> list[str]:
    """Prefix ``cmd`` with ``nice -n`` (the machine's cores are shared) when nice exists and ``nice`` > 0."""
    nice_bin = shutil.which("nice")
    return [nice_bin, "-n", str(nice), *cmd] if nice > 0 and nice_bin else list(cmd)


def run_logged(cmd: Sequence[str], log: Path, *, what: str, cwd: Path | None = None,
               env: Mapping[str, str] | None = None, on_line: Callable[[str], None] | None = None) -> None:
    """Run ``cmd`` with its output appended to ``log`` (each line also given to ``on_line``, e.g. for progress);
    a failure is a WebsdError naming the log."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        except OSError as e:
            raise WebsdError(f"{what} could not start {cmd[0]} ({e}); see {log}") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if on_line:
                on_line(line)
        rc = proc.wait()
        f.write(f"# exit {rc} after {time.monotonic() - start:.1f} s\n")
    if rc != 0:
        raise WebsdError(f"{what} failed (exit {rc}); see {log}")
