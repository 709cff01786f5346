"""The glue between plain stage functions and doit: staleness checks, running a stage, locking, reporting.

Kept apart from the stages (like doit's own dependency/control/runner split): nothing here knows what a stage does.
Only the standard library and doit are imported at load time, so ``doit list`` stays fast.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from doit.dependency import SqliteDB
from doit.exceptions import InvalidTask, TaskFailed
from doit.reporter import ConsoleReporter

from .config import PROJECT_ROOT
from .errors import WebsdError
from .fs_errors import explain, low_space
from .fsutil import write_json

# ---------------------------------------------------------------------------------------------------------------
# what is stale


def fingerprint_uptodate(key: str, compute: Callable[[], object], scope: str = "") -> Callable:
    """A doit ``uptodate`` check: up to date while ``compute()`` equals its value at the last success.

    doit calls it when the task is about to run (after the tasks it depends on), so a fingerprint of a TVM checkout
    sees the checkout that ``tvm_checkout`` has just produced. The value saved is computed again after the task
    succeeds, so it may describe the task's own result too (e.g. "the selected build is on disk").

    Values are remembered per ``scope`` (dodo.py: the stage's output paths, which name e.g. the TVM version): a
    fingerprint of TVM v0.21's tree does not overwrite v0.26's, so switching back finds its value still there.
    """

    def check(task, values):
        known = values.get(key)
        known = dict(known) if isinstance(known, dict) and known.get("__scoped__") else {"__scoped__": True}
        task.value_savers.append(lambda: {key: {**known, scope: compute()}})
        return scope in known and known[scope] == compute()

    check.__name__ = f"fingerprint_{key}"
    return check


# path -> [mtime, size, md5] of files hashed before, kept across runs (<cache>/.file-md5.json). doit re-hashes a
# file whose mtime changed on every run until the task reading it runs again (a rebuilt input with identical
# bytes leaves its reader up to date, so that never happens): the memo makes that a stat.
_md5_memo: dict[str, list] = {}
_memo_path: Path | None = None


def use_md5_memo(path: Path) -> None:
    """Load the md5 memo from ``path`` and save it there when this process exits (if it changed)."""
    global _memo_path
    import atexit
    import json

    _memo_path = Path(path)
    try:
        _md5_memo.update(json.loads(_memo_path.read_text()))
    except (OSError, ValueError):
        pass
    loaded = dict(_md5_memo)
    atexit.register(lambda: _md5_memo != loaded and _save_md5_memo())


def _save_md5_memo() -> None:
    try:
        write_json(_memo_path, _md5_memo)
    except OSError:
        pass  # only a memo (a full disk, a read-only cache): the next run hashes again


def _md5(path: str, st: os.stat_result) -> str:
    from doit.dependency import get_file_md5

    known = _md5_memo.get(path)
    if known and known[0] == st.st_mtime and known[1] == st.st_size:
        return known[2]
    md5 = get_file_md5(path)
    _md5_memo[path] = [st.st_mtime, st.st_size, md5]
    return md5


def _modified(path: str, state) -> bool:
    """doit's MD5Checker rule (same mtime: same file; other size: modified; else compare md5), memoized."""
    st = os.stat(path)
    timestamp, size, md5 = state
    if st.st_mtime == timestamp:
        return False
    return st.st_size != size or _md5(path, st) != md5


class file_states:  # noqa: N801 - named like doit's own uptodate checks (config_changed, timeout)
    """A doit ``uptodate`` check over input files, in place of ``file_dep`` for inputs whose paths encode config.

    doit re-runs a task whose list of ``file_dep`` differs from its last run's. The model stages read and write
    directories named after the model, dtype and image size (pipeline.layout), so with those inputs as ``file_dep``
    switching ``model.dtype`` back would rebuild although the first dtype's outputs are still there. This compares
    each file like ``file_dep`` does (doit's own MD5Checker: mtime, then size, then md5) and keeps the states each
    configuration saw apart, by ``scope`` (dodo.py: the task's output paths, which name its configuration): a file
    every configuration reads (the stage's code) changed and rebuilt for one model is still stale for another.
    doit does not order tasks by these files: declare their producers in ``task_dep``.
    """

    def __init__(self, paths, scope: str = ""):
        self.paths = [str(p) for p in paths]
        self.scope = scope
        self.scopes: dict = {}

    def configure_task(self, task):
        task.value_savers.append(self._states)

    def _states(self) -> dict:
        states = dict(self.scopes.get(self.scope, {}))
        for p in self.paths:
            if os.path.exists(p):
                st = os.stat(p)
                if p not in states or states[p][0] != st.st_mtime:
                    states[p] = (st.st_mtime, st.st_size, _md5(p, st))
        return {"file_states": {**self.scopes, self.scope: states, "__scoped__": True}}

    def __call__(self, task, values):
        self.scopes = scoped_states(values.get("file_states"), self.scope)
        known = self.scopes.get(self.scope, {})
        _checked_inputs[task.name] = (self.scope, self.paths)
        return all(p in known and os.path.exists(p) and not _modified(p, known[p]) for p in self.paths)

    def __repr__(self):
        return f"file_states({self.paths!r}, scope={self.scope!r})"


def scoped_states(saved, scope: str) -> dict:
    """A task's saved file states as {scope: {path: state}}. A record from before scopes ({path: state} for every
    configuration at once) counts as the states of the scope asking, once: no rebuild for the upgrade."""
    if not saved:
        return {}
    saved = dict(saved)
    if saved.pop("__scoped__", False):
        return saved
    return {scope: saved}


# ---------------------------------------------------------------------------------------------------------------
# the dependency database: every finished task is committed at once

# task name -> (scope, input paths) its file_states check saw in this process: set only for tasks doit checked for
# staleness in this run, so a removal of one of them is a failure of this run (not `doit forget` or `doit clean`)
_checked_inputs: dict[str, tuple[str, list[str]]] = {}


class CommittingSqliteDB(SqliteDB):
    """doit's sqlite3 backend, committing each task's record as soon as doit has saved it (pyproject.toml
    registers it as the ``websd`` backend; dodo.py selects it).

    doit 0.37 writes its database only when a run ends, so a killed run lost every stage it had finished, and a
    failed task's removal wiped the states it kept for other configurations. A backend is doit's documented plug-in
    point for this; per-stage records of our own would duplicate what file_states and config_changed already keep.
    - ``Dependency.save_success`` always sets ``deps:`` last: that is when a task's record is complete, and it is
      written and committed in one transaction (a kill before it leaves the task's previous record).
    - A task that failed in this run loses only the states its configuration's inputs had (so it runs again here),
      not those of other configurations; other tasks' records are untouched. ``doit forget``/``clean``
      still remove the whole record.
    """

    desc = "sqlite3, committed after every task (websd)"

    def __init__(self, name, codec, *, module_name=None):
        try:
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            super().__init__(name, codec, module_name=module_name)
        except (OSError, sqlite3.Error) as e:
            raise _one_line(e, Path(name).parent) from None

    def set(self, task_id, dependency, value):
        super().set(task_id, dependency, value)
        if dependency == "deps:":
            self._commit(task_id)

    def remove(self, task_id):
        inputs = _checked_inputs.pop(task_id, None)
        data = self._cache.get(task_id) or self._get_task_data(task_id)
        if inputs is None or not data:
            super().remove(task_id)
            self._conn.commit()
            return
        data = self._cache[task_id] = dict(data)
        values = dict(data.get("_values_:") or {})
        scope, paths = inputs
        scopes = scoped_states(values.get("file_states"), scope)
        scopes[scope] = {p: s for p, s in scopes.get(scope, {}).items() if p not in paths}
        values["file_states"] = {**scopes, "__scoped__": True}
        data["_values_:"] = values
        self._commit(task_id)

    def _commit(self, task_id):
        try:
            self._conn.execute("insert or replace into doit values (?,?)",
                               (task_id, self.codec.encode(self._cache[task_id])))
            self._conn.commit()
        except sqlite3.Error as e:  # a full disk: doit reports an InvalidTask as one line and stops
            self._dirty.clear()  # nothing left for dump() to fail on a second time
            raise _one_line(e, Path(self.name).parent) from None
        self._dirty.discard(task_id)

    def dump(self):
        try:
            super().dump()
        except sqlite3.Error as e:
            raise _one_line(e, Path(self.name).parent) from None


def _one_line(exc: BaseException, cache_dir: Path) -> InvalidTask:
    """doit prints an ``InvalidTask`` as one ``ERROR:`` line (any other exception from its machinery: a traceback)."""
    err = explain(exc, cache_dir)
    return InvalidTask(str(err) if err else f"dependency database {cache_dir / '.doit.sqlite3'}: {exc}")


# ---------------------------------------------------------------------------------------------------------------
# running


def python_stage(fn: Callable, *args, cache_dir: Path = Path("cache")) -> Callable:
    """Wrap a stage function as a doit python-action: a ``WebsdError``, or a file-system failure a user can fix
    (pipeline.fs_errors, e.g. a full disk under ``cache_dir``), becomes a one-line failure; other errors keep their
    traceback."""

    def action():
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - anything else is re-raised below
            err = explain(e, cache_dir)
            if err is None:
                raise
            return TaskFailed(str(err))
        return None

    action.__name__ = fn.__name__
    return action


def stats_path(cache_dir: Path, task_name: str) -> Path:
    return cache_dir / "stats" / f"{task_name}.json"


def subprocess_stage(task_name: str, stage: str, submodel: str, overrides: dict[str, str],
                     env_fn: Callable[[], dict], cache_dir: Path) -> Callable:
    """A doit action that runs ``python -m pipeline.run_stage`` in a child process.

    A child keeps doit's own process light (torch and TVM are imported only there), lets the child use the TVM that
    ``tvm_build`` selected (its env is computed when the action runs, after tvm_build), and gives each stage its own
    peak-RSS figure (from ``wait4``), recorded with the wall time in ``cache/stats/<task>.json`` for the benchmark.
    """

    def action():
        cmd = [sys.executable, "-m", "pipeline.run_stage", stage, submodel,
               *(f"{k}={v}" for k, v in overrides.items())]
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env_fn(), stderr=subprocess.PIPE, text=True, bufsize=1)
        last_error = ""
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("error:"):  # printed once, by the reporter, as this task's failure
                last_error = line[len("error:"):].strip()
            else:
                sys.stderr.write(line)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.time() - start
        if proc.returncode != 0:
            # a tool that ran out of disk often says so in its own words (LLVM: "IO failure on output stream")
            full = None if last_error else low_space(cache_dir)
            return TaskFailed(str(full) if full else last_error or f"{stage} {submodel} exited with {proc.returncode}")
        try:
            write_json(stats_path(cache_dir, task_name), {"task": task_name, "seconds": round(seconds, 2),
                                                          "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)})
        except OSError as e:
            return TaskFailed(str(explain(e, cache_dir) or e))
        return None

    action.__name__ = f"run_stage_{stage}_{submodel}"
    return action


def remove_paths(paths: list[Path]) -> None:
    """``clean`` action for a directory target (doit's ``clean: True`` removes files and empty folders only)."""
    import shutil

    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def clean_only_when_named(task_name: str, paths: Callable[[], list[Path]]) -> Callable:
    """``clean`` action for expensive stages: removes its outputs only when the task is named on the command line.

    ``doit clean`` (or ``doit clean -a``) thus keeps the TVM checkout and build; ``doit clean tvm_build`` removes them.
    """

    def clean():
        if task_name not in sys.argv[1:]:
            print(f"kept {task_name} outputs (expensive): `doit clean {task_name}` removes them")
            return
        remove_paths(paths())
        print(f"removed {task_name} outputs")

    return clean


# ---------------------------------------------------------------------------------------------------------------
# one doit at a time per tree


_lock_file = None


def acquire_tree_lock(cache_dir: Path, wait: bool = True) -> None:
    """Hold an exclusive lock on ``cache/.doit.lock`` for the life of this process.

    A second ``doit`` on the same tree waits (saying so) instead of racing on targets and the dependency database.
    ``WEBSD_LOCK_WAIT=0`` makes it refuse instead of waiting.
    """
    global _lock_file
    if _lock_file is not None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        f = open(cache_dir / ".doit.lock", "a+")
    except OSError as e:
        raise explain(e, cache_dir) or WebsdError(f"cannot use the cache directory {cache_dir} ({e})") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        if not wait:
            raise WebsdError(f"another doit is running on this tree (pid {holder}); wait for it or stop it")
        print(f"waiting for another doit on this tree (pid {holder}) to finish...", file=sys.stderr, flush=True)
        fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _lock_file = f


# ---------------------------------------------------------------------------------------------------------------
# reporting


class SummaryReporter(ConsoleReporter):
    """doit's console reporter (``.  task`` ran, ``-- task`` up to date) plus a closing summary table.

    Failures print as one line (``error: <task>: <message>``) instead of a traceback for ``WebsdError``s.
    """

    desc = "console output with a summary of what ran and how long it took"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.started: dict[str, float] = {}
        self.rows: list[tuple[str, str, float | None]] = []
        self.run_start = time.time()

    def execute_task(self, task):
        self.started[task.name] = time.time()
        super().execute_task(task)
        if hasattr(self.outstream, "flush"):
            self.outstream.flush()

    def _visible(self, task) -> bool:
        return bool(task.actions) and not task.name.startswith("_")

    def add_success(self, task):
        if self._visible(task):
            from .remote_cache import TRANSFERS  # what the remote cache moved for this task (pipeline.remote_cache)

            hit = TRANSFERS.get(task.name)
            status = "remote" if hit and hit.status == "hit" else "ran"
            self.rows.append((task.name, status, time.time() - self.started.get(task.name, time.time())))

    def add_failure(self, task, fail):
        if self._visible(task):
            self.rows.append((task.name, "FAILED", time.time() - self.started.get(task.name, time.time())))
        super().add_failure(task, fail)

    def skip_uptodate(self, task):
        if self._visible(task):
            self.rows.append((task.name, "up to date", None))
        super().skip_uptodate(task)

    def _write_failure(self, result, write_exception=True):
        exc = result["exception"]
        msg = exc.get_msg().strip()
        if isinstance(exc, TaskFailed) and "\n" not in msg:
            self.write(f"error: {result['task'].name}: {msg}\n")
        else:
            super()._write_failure(result, write_exception)

    def complete_run(self):
        super().complete_run()
        if not self.rows:
            return
        if all(status == "up to date" for _, status, _ in self.rows):  # a no-op: one line, no table (nor rich)
            self.write(f"websd: 0 ran, {len(self.rows)} up to date, {time.time() - self.run_start:.1f}s\n")
            return
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:  # pragma: no cover - rich is a declared dependency
            for name, status, seconds in self.rows:
                self.write(f"{name:24} {status:10} {'' if seconds is None else f'{seconds:.1f}s'}\n")
            return
        from .remote_cache import TRANSFERS

        remote = f", {sum(r[1] == 'remote' for r in self.rows)} from the remote cache" if TRANSFERS else ""
        table = Table(title=f"websd: {sum(r[1] == 'ran' for r in self.rows)} ran{remote}, "
                            f"{sum(r[1] == 'up to date' for r in self.rows)} up to date, "
                            f"{time.time() - self.run_start:.1f}s", title_justify="left")
        table.add_column("task")
        table.add_column("status")
        table.add_column("time", justify="right")
        if TRANSFERS:
            table.add_column("remote", justify="right")
        style = {"ran": "green", "remote": "cyan", "up to date": "dim", "FAILED": "bold red"}
        for name, status, seconds in self.rows:
            cells = [name, f"[{style[status]}]{status}[/]", "" if seconds is None else f"{seconds:.1f}s"]
            if TRANSFERS:
                t = TRANSFERS.get(name)
                cells.append("" if t is None else _transfer_cell(t))
            table.add_row(*cells)
        Console(file=self.outstream, force_terminal=None, width=100).print(table)
        if TRANSFERS:
            self.write(f"remote cache: {sum(t.down for t in TRANSFERS.values()) / 1e6:.1f} MB down, "
                       f"{sum(t.up for t in TRANSFERS.values()) / 1e6:.1f} MB up\n")


def _transfer_cell(t) -> str:
    """The remote-cache column: what moved for one task ("12.3 MB down", "4.5 MB up", "miss", "warning")."""
    if t.down:
        return f"{t.down / 1e6:.1f} MB down"
    if t.up or t.status == "stored":
        return f"{t.up / 1e6:.1f} MB up"
    return t.status


def doit_cli_vars() -> dict[str, str]:
    """``section.key=value`` arguments given on the doit command line."""
    from doit import doit_cmd

    return dict(doit_cmd._CMDLINE_VARS or {})  # doit keeps them in this dict; get_var reads one at a time

