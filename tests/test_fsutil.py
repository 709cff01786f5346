import os
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


def test_publish_versioned_switches_a_symlink_and_prunes_old_versions(tmp_path):
    from pipeline.fsutil import publish_versioned, versions_dir

    link = tmp_path / "site"
    link.mkdir()
    (link / "index.html").write_text("before versioning")  # a site from before: becomes a version, then pruned
    seen = []
    for n in range(5):
        with publish_versioned(link, keep=3) as work:
            (work / "index.html").write_text(f"v{n}")
            assert (link / "index.html").read_text() == ("before versioning" if n == 0 else f"v{n - 1}")
        seen.append(os.path.realpath(link))
        assert link.is_symlink() and (link / "index.html").read_text() == f"v{n}"
    kept = sorted(p.name for p in versions_dir(link).iterdir())
    assert len(kept) == 3 and [os.path.realpath(versions_dir(link) / k) for k in kept] == seen[-3:]
    # a build that fails (or is killed) leaves the served version alone; its leftover goes on the next build
    try:
        with publish_versioned(link) as work:
            (work / "index.html").write_text("half")
            raise RuntimeError("stage failed")
    except RuntimeError:
        pass
    assert (link / "index.html").read_text() == "v4"
    (versions_dir(link) / ".new-killed").mkdir()
    (tmp_path / ".site.link-killed").symlink_to("nowhere")
    with publish_versioned(link) as work:
        (work / "index.html").write_text("v5")
    assert not (versions_dir(link) / ".new-killed").exists() and not (tmp_path / ".site.link-killed").is_symlink()
    assert (link / "index.html").read_text() == "v5"


def test_scratch_dir_removes_what_a_killed_run_left(tmp_path):
    from pipeline.fsutil import scratch_dir

    left = tmp_path / ".tvmjs-build.abcd1234"
    left.mkdir()
    (left / "big.o").write_bytes(b"x" * 100)
    other = tmp_path / ".tvmjs-other"
    other.mkdir()
    with scratch_dir(tmp_path, ".tvmjs-build.") as tmp:
        assert tmp.is_dir() and tmp.name.startswith(".tvmjs-build.")
        assert not left.exists()
    assert not tmp.exists() and other.exists()
