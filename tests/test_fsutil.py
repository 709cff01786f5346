import signal
import subprocess
import sys

from conftest import ROOT  # tests/conftest.py

from pipeline.fsutil import atomic_path, atomic_write


def test_a_killed_writers_temp_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "params"
    # a writer SIGKILLed inside atomic_path leaves its temp (the finally clause never runs)
    code = ("import os, signal, sys; from pathlib import Path; from pipeline.fsutil import atomic_path\n"
            "with atomic_path(Path(sys.argv[1])) as work:\n"
            "    work.mkdir(); (work / 'half').write_text('x')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL
    [stale] = tmp_path.glob(".params.*.tmp")
    assert not target.exists()
    # a temp of another target whose name starts the same is not this target's
    other = tmp_path / ".params.json.abcd1234.tmp"
    other.mkdir()

    with atomic_path(target) as work:
        work.mkdir()
        (work / "done").write_text("y")
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".params.json.abcd1234.tmp", "params"]
    assert (target / "done").read_text() == "y"


def test_a_failed_write_keeps_the_old_target_and_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    try:
        with atomic_write(target) as f:
            f.write("new")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
