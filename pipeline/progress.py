"""Progress of long stages (TVM build, runtime bundling, compiling a submodel) on stderr.

On a terminal it is a rich progress bar; in CI or a log it is a plain line every 10% so logs stay readable.
"""
from __future__ import annotations

import sys
import time


class StageProgress:
    def __init__(self, title: str, stream=None):
        self.title = title
        self.stream = stream or sys.stderr
        self.start = time.time()
        self._last_decile = -1
        self._bar = None
        if self.stream.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), TextColumn("{task.fields[what]}"), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(title, total=None, what="")

    def step(self, what: str) -> None:
        """A named step of a stage with few steps (e.g. 'compile wasm_runtime.cc')."""
        if self._bar:
            self._bar.update(self._task, what=what)
        else:
            print(f"  {self.title}: {what} ({time.time() - self.start:.0f}s)", file=self.stream, flush=True)

    def update(self, done: int, total: int, what: str = "") -> None:
        """Counted progress (e.g. ninja's [n/m])."""
        if self._bar:
            self._bar.update(self._task, completed=done, total=total, what=what[-50:])
            return
        decile = done * 10 // max(total, 1)
        if decile != self._last_decile:
            self._last_decile = decile
            print(f"  {self.title}: {done}/{total} ({time.time() - self.start:.0f}s)", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar:
            self._bar.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
