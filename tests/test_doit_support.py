import fcntl
import os
import threading
import time

import pytest

from pipeline import doit_support as ds
from pipeline.errors import WebsdError


class FakeTask:
    def __init__(self):
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
