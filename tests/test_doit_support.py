import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT  # tests/conftest.py

from pipeline import doit_support as ds
from pipeline.errors import WebsdError


class FakeTask:
    def __init__(self, name="t"):
        self.name = name
        self.value_savers = []


def test_fingerprint_uptodate_compares_with_the_saved_value():
    state = {"fp": "a"}
    check = ds.fingerprint_uptodate("src", lambda: state["fp"])
    task = FakeTask()
    assert check(task, {}) is False
    saved = task.value_savers[0]()
    assert saved == {"src": {"__scoped__": True, "": "a"}}
    assert check(FakeTask(), saved) is True
    state["fp"] = "b"
    assert check(FakeTask(), saved) is False


def test_fingerprint_uptodate_remembers_each_scope():
    """A switch of the TVM version (another scope) and back finds the first scope's value still saved."""
    fp = {"v0.21.0": "x", "v0.26.0": "y"}
    c21 = ds.fingerprint_uptodate("src", lambda: fp["v0.21.0"], scope="v0.21.0")
    c26 = ds.fingerprint_uptodate("src", lambda: fp["v0.26.0"], scope="v0.26.0")
    task = FakeTask()
    assert c21(task, {}) is False
    saved = task.value_savers[0]()
    task = FakeTask()
    assert c26(task, saved) is False  # first run of the other scope
    saved = task.value_savers[0]()
    task = FakeTask()
    assert c21(task, saved) is True  # back: still up to date
    assert c26(FakeTask(), task.value_savers[0]()) is True
    fp["v0.21.0"] = "z"
    assert c21(FakeTask(), saved) is False


def test_python_stage_turns_websd_errors_into_one_line_failures():
    def bad():
        raise WebsdError("emcc not found:\n run ./setup.sh")

    result = ds.python_stage(bad)()
    assert result.get_msg().strip() == "emcc not found: run ./setup.sh"
    assert ds.python_stage(lambda: None)() is None


def _hold_lock(path, seconds, ready):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0), f.truncate(), f.write("4242"), f.flush()
        ready.set()
        time.sleep(seconds)


def test_second_doit_refuses_or_waits(doit, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    ready = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(cache / ".doit.lock", 3, ready))
    holder.start()
    ready.wait()
    refused = doit("tokenizer", env={**os.environ, "WEBSD_LOCK_WAIT": "0"})
    assert refused.returncode != 0
    assert "error: another doit is running on this tree (pid 4242)" in refused.output
    start = time.time()
    waited = doit("list", env=dict(os.environ))  # read-only commands never wait
    assert waited.returncode == 0 and time.time() - start < 3
    waited = doit("clean", "tokenizer", env=dict(os.environ))
    holder.join()
    assert "waiting for another doit on this tree (pid 4242)" in waited.output
    assert waited.returncode == 0


def test_file_states_keeps_the_states_of_files_other_configurations_read(tmp_path):
    f32, f16 = tmp_path / "float32.json", tmp_path / "float16.json"
    f32.write_text("a")
    f16.write_text("b")

    def run(path, values):
        """check, then (as doit does after the task succeeded) save; returns (up to date, saved values)"""
        check, task = ds.file_states([path]), FakeTask()
        check.configure_task(task)
        fresh = check(task, values)
        return fresh, {k: v for saver in task.value_savers for k, v in saver().items()}

    fresh, values = run(f32, {})
    assert fresh is False  # never seen
    fresh, values = run(f16, values)  # a run of the other configuration...
    assert fresh is False
    assert run(f32, values)[0] is True  # ...keeps the first one's state
    os.utime(f32, (1, 1))  # same content, new mtime: compared by md5, like file_dep
    assert run(f32, values)[0] is True
    f32.write_text("c")
    assert run(f32, values)[0] is False
    f32.unlink()
    assert run(f32, values)[0] is False


# --- the committing backend, on a two-task dodo.py of its own --------------------------------------------------

_DODO = '''
import os, signal
from pathlib import Path
from pipeline import doit_support as ds

CFG = os.environ.get("CFG", "a")  # a configuration: its inputs and outputs have their own paths (like Layout)
DOIT_CONFIG = {"backend": os.environ["BACKEND"], "dep_file": ".doit.sqlite3", "verbosity": 2}


def _copy(name):
    def action():
        if name == "second" and os.environ.get("KILL"):
            os.killpg(0, signal.SIGKILL)  # like a user's kill of the whole process group
        if name == "second" and os.environ.get("FAIL"):
            return False
        Path(f"{name}.{CFG}.out").write_text(Path(f"in.{CFG}").read_text())
    return action


def task_first():  # code.py: a file every configuration reads (like a stage's code)
    return {"actions": [_copy("first")], "targets": [f"first.{CFG}.out"],
            "uptodate": [ds.file_states([f"in.{CFG}", "code.py"], scope=CFG)]}


def task_second():
    return {"actions": [_copy("second")], "targets": [f"second.{CFG}.out"], "task_dep": ["first"],
            "uptodate": [ds.file_states([f"in.{CFG}", f"first.{CFG}.out"], scope=CFG)]}
'''


def _mini_project(tmp_path):
    (tmp_path / "dodo.py").write_text(_DODO)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.doit.plugins.backend]\nwebsd = "pipeline.doit_support:CommittingSqliteDB"\n')
    for cfg in "ab":
        (tmp_path / f"in.{cfg}").write_text(cfg)
    (tmp_path / "code.py").write_text("1")
    return tmp_path


def _doit(project, backend, **env):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BACKEND": backend, **env}
    proc = subprocess.run([sys.executable, "-m", "doit"], cwd=project, env=env, capture_output=True, text=True,
                          start_new_session=True, timeout=120)
    out = proc.stdout + proc.stderr
    return proc.returncode, set(re.findall(r"^\.  (\S+)", out, re.M)), out


@pytest.mark.parametrize("backend", ["websd", "sqlite3"])
def test_a_killed_run_keeps_the_tasks_it_finished(tmp_path, backend):
    project = _mini_project(tmp_path)
    rc, ran, out = _doit(project, backend, KILL="1")
    assert rc == -signal.SIGKILL and ran == {"first", "second"}, out
    rc, ran, out = _doit(project, backend)
    assert rc == 0, out
    # doit's own sqlite3 backend writes its database only when a run ends: the control that this test can fail
    assert ran == ({"second"} if backend == "websd" else {"first", "second"}), out


@pytest.mark.parametrize("backend", ["websd", "sqlite3"])
def test_a_failed_task_keeps_its_other_configurations_and_other_tasks(tmp_path, backend):
    project = _mini_project(tmp_path)
    assert _doit(project, backend, CFG="a")[:2] == (0, {"first", "second"})
    rc, ran, out = _doit(project, backend, CFG="b", FAIL="1")
    assert rc != 0 and ran == {"first", "second"}, out
    rc, ran, out = _doit(project, backend, CFG="a")  # back to a: nothing of a changed
    assert rc == 0
    assert ran == (set() if backend == "websd" else {"second"}), out
    rc, ran, out = _doit(project, backend, CFG="b")  # b: only the task that failed runs again
    assert rc == 0 and ran == {"second"}, out


def test_a_change_every_configuration_reads_is_stale_for_each_of_them(tmp_path):
    """A stage's code changed and rebuilt for one model is still stale for another (the states are kept per
    configuration): before scopes the second model's build ran nothing, with outputs of the old code."""
    project = _mini_project(tmp_path)
    for cfg in "ab":
        assert _doit(project, "websd", CFG=cfg)[:2] == (0, {"first", "second"})
    (project / "code.py").write_text("2")
    assert _doit(project, "websd", CFG="a")[1] == {"first"}  # its output's bytes did not change: second stays
    assert _doit(project, "websd", CFG="b")[1] == {"first"}
    assert _doit(project, "websd", CFG="a")[1] == set()


def test_states_saved_before_scopes_count_for_the_scope_that_reads_them(tmp_path):
    path = tmp_path / "in.json"
    path.write_text("a")
    st = path.stat()
    flat = {str(path): (st.st_mtime, st.st_size, ds._md5(str(path), st))}  # a record from before scopes
    check, task = ds.file_states([path], scope="float16"), FakeTask()
    check.configure_task(task)
    assert check(task, {"file_states": flat}) is True  # no rebuild for the upgrade
    saved = {k: v for saver in task.value_savers for k, v in saver().items()}["file_states"]
    assert saved["__scoped__"] and set(saved) == {"__scoped__", "float16"}


def test_summary_marks_remote_hits_and_bytes_moved(monkeypatch):
    import io
    from types import SimpleNamespace

    from pipeline import remote_cache
    from pipeline.doit_support import SummaryReporter

    monkeypatch.setattr(remote_cache, "TRANSFERS", {"shard_unet": remote_cache.Transfer("hit", down=12_500_000),
                                                    "compile_unet": remote_cache.Transfer("stored", up=3_000_000)})
    out = io.StringIO()
    rep = SummaryReporter(out, {})
    for name in ("shard_unet", "compile_unet"):
        task = SimpleNamespace(name=name, actions=[object()], title=lambda: name)
        rep.execute_task(task)
        rep.add_success(task)
    rep.complete_run()
    text = out.getvalue()
    assert "1 ran, 1 from the remote cache" in text
    assert re.search(r"shard_unet\s+│ remote .*12\.5 MB down", text), text
    assert re.search(r"compile_unet\s+│ ran .*3\.0 MB up", text), text
    assert "remote cache: 12.5 MB down, 3.0 MB up" in text
