"""The remote build cache against a real S3 server (SeaweedFS on 127.0.0.1, tests/s3_server.py; no mock of S3).

Most faults are tried on a stand-in stage (a doit action writing one large file and a stamp; real transfers through
pipeline.remote_cache.cached, the server killed from its progress callback at a chosen byte); the round trip, two
concurrent writers and wrong credentials go through the real ``doit`` on the real weights and tokenizer stages.
Every fault must end in a correct build and one ``warning:`` line.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import remote_cache
from pipeline.config import load_config
from pipeline.remote_cache import StagePlan, Store, cached, stage_key
from tests.conftest import ROOT, run_doit
from tests.s3_server import SECRET_KEY

BIG = 24 << 20  # above boto3's 8 MB multipart threshold: the stream is cut between parts


def payload(seed: str, size: int = BIG) -> bytes:
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KB
    return (block * (size // len(block) + 1))[:size]


class FakeStage:
    """A stand-in stage: writes ``<cache>/fake/out.bin`` (BIG bytes) then ``fake/stamp.json``; counts its runs."""

    def __init__(self, cache: Path, seed: str = "v1"):
        self.cache, self.seed, self.runs = cache, seed, 0
        self.input = cache / "fake-input.txt"
        self.input.parent.mkdir(parents=True, exist_ok=True)
        self.input.write_text(seed)

    @property
    def roots(self) -> list[Path]:
        return [self.cache / "fake"]

    def action(self):
        self.runs += 1
        out = self.cache / "fake"
        out.mkdir(parents=True, exist_ok=True)
        (out / "out.bin").write_bytes(payload(self.seed))
        (out / "stamp.json").write_text(json.dumps({"seed": self.seed}))
        return None

    def plan(self) -> StagePlan:
        return StagePlan(task="fake", sub=None, tracked=lambda: [self.input], config=lambda: {"k": 1},
                         fingerprint=lambda: None, roots=lambda: self.roots)

    def correct(self) -> bool:
        out = self.cache / "fake" / "out.bin"
        return out.read_bytes() == payload(self.seed) and json.loads((out.parent / "stamp.json").read_text()) == \
            {"seed": self.seed}


@pytest.fixture
def remote(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WEBSD_CACHE_REMOTE", "s3://cache/test")
    remote_cache.TRANSFERS.clear()
    return s3_server


def cfg_for(cache: Path, mode: str):
    return load_config(pyproject=None, cli={"paths.cache": str(cache), "cache.remote_mode": mode})


def run_fake(stage: FakeStage, mode: str, store_factory=Store):
    return cached(stage.action, stage.plan(), cfg_for(stage.cache, mode), store_factory=store_factory)()


def warnings_in(text: str) -> list[str]:
    assert "Traceback" not in text
    return [line for line in text.splitlines() if line.startswith("warning:")]


def the_entry(server) -> dict:
    s3 = server.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="cache", Prefix="test/entries/").get("Contents", [])]
    assert len(keys) == 1, keys
    return json.loads(s3.get_object(Bucket="cache", Key=keys[0])["Body"].read())


def killer(server, after: int):
    """A progress callback that kills the server once ``after`` bytes have streamed."""
    seen = [0]

    def progress(n):
        seen[0] += n
        if seen[0] >= after:
            server.kill()

    return lambda url: Store(url, progress=progress)


# ---------------------------------------------------------------------------------------------------------------
# the key

def test_key_follows_inputs_config_fingerprint_and_tools(tmp_path):
    cache = tmp_path / "c"
    f = tmp_path / "c" / "in.txt"
    f.parent.mkdir()
    f.write_text("a")

    def key(**kw):
        args = dict(task="t", sub=None, tracked=[f], config={"x": 1}, fingerprint=None, tools=(), cache_dir=cache)
        return stage_key(**{**args, **kw})

    base = key()
    assert key() == base
    assert key(config={"x": 2}) != base
    assert key(fingerprint="tree2") != base
    assert key(tools=("python3",)) != base
    assert key(task="u") != base
    assert key(roots=[cache / "models" / "tiny" / "float16-default"]) != key(roots=[cache / "models" / "tiny" / "a"])
    # a file of an installed package counts by its place in the Python environment, wherever that lives
    pkg = Path(sys.prefix) / "lib" / "websd-key-probe.txt"
    assert remote_cache._where(pkg, cache) == "python:lib/websd-key-probe.txt"
    f.write_text("b")
    assert key() != base
    # the same content under another cache directory (another clone): the same key
    other = tmp_path / "elsewhere"
    (other).mkdir()
    (other / "in.txt").write_text("b")
    assert stage_key("t", None, [other / "in.txt"], {"x": 1}, None, (), other) == key()


def test_bad_remote_url_is_one_line():
    from pipeline.errors import WebsdError

    with pytest.raises(WebsdError, match="cache.remote must look like s3://bucket/prefix"):
        load_config(pyproject=None, cli={"cache.remote": "https://bucket/x"})


# ---------------------------------------------------------------------------------------------------------------
# the stand-in stage: hits, misses and faults

def test_store_then_hit(remote, tmp_path, capsys):
    writer = FakeStage(tmp_path / "a")
    assert run_fake(writer, "read-write") is None and writer.runs == 1
    assert remote_cache.TRANSFERS["fake"].status == "stored" and remote_cache.TRANSFERS["fake"].up >= BIG
    entry = the_entry(remote)
    assert {f["path"] for f in entry["files"]} == {"fake/out.bin", "fake/stamp.json"}
    reader = FakeStage(tmp_path / "b")
    assert run_fake(reader, "read") is None
    assert reader.runs == 0 and reader.correct()
    assert remote_cache.TRANSFERS["fake"].status == "hit" and remote_cache.TRANSFERS["fake"].down >= BIG
    assert warnings_in(capsys.readouterr().err) == []
    # read mode stores nothing: another input is a miss that stays a miss
    other = FakeStage(tmp_path / "c", seed="v2")
    run_fake(other, "read")
    assert other.runs == 1 and other.correct() and len(the_entry(remote)["files"]) == 2


def test_server_killed_mid_upload(remote, tmp_path, capsys):
    writer = FakeStage(tmp_path / "a")
    assert run_fake(writer, "read-write", store_factory=killer(remote, BIG // 2)) is None
    assert writer.runs == 1 and writer.correct()  # the local build stands
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and "upload failed" in lines[0], lines
    remote.start()  # the same port and data: whatever part arrived is there
    s3 = remote.client()
    assert not s3.list_objects_v2(Bucket="cache", Prefix="test/entries/").get("Contents")  # no entry without blobs
    reader = FakeStage(tmp_path / "b")
    run_fake(reader, "read")
    assert reader.runs == 1 and reader.correct()  # a miss, built locally
    assert warnings_in(capsys.readouterr().err) == []


def test_server_killed_mid_download(remote, tmp_path, capsys):
    run_fake(FakeStage(tmp_path / "a"), "read-write")
    reader = FakeStage(tmp_path / "b")
    old = reader.cache / "fake"
    old.mkdir(parents=True)
    (old / "stamp.json").write_text("an older build")
    assert run_fake(reader, "read", store_factory=killer(remote, BIG // 2)) is None
    assert reader.runs == 1 and reader.correct()
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and "lookup failed" in lines[0] and "building locally" in lines[0], lines
    assert not list(reader.cache.glob(".remote-cache-*"))  # no scratch left behind


def _blob_key(entry: dict, name: str) -> str:
    sha = next(f["sha256"] for f in entry["files"] if f["path"] == f"fake/{name}")
    return f"test/blobs/{sha}"


def test_truncated_object_is_rebuilt_and_repaired(remote, tmp_path, capsys):
    run_fake(FakeStage(tmp_path / "a"), "read-write")
    s3, key = remote.client(), _blob_key(the_entry(remote), "out.bin")
    s3.put_object(Bucket="cache", Key=key, Body=payload("v1")[:1000])  # truncated
    fixer = FakeStage(tmp_path / "b")
    run_fake(fixer, "read-write")
    assert fixer.runs == 1 and fixer.correct()
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and "truncated" in lines[0], lines
    # the rebuild uploaded the object again (its stored size was wrong): the next reader gets a hit
    assert s3.head_object(Bucket="cache", Key=key)["ContentLength"] == BIG
    reader = FakeStage(tmp_path / "c")
    run_fake(reader, "read")
    assert reader.runs == 0 and reader.correct()


def test_corrupt_object_of_the_right_size(remote, tmp_path, capsys):
    run_fake(FakeStage(tmp_path / "a"), "read-write")
    s3, key = remote.client(), _blob_key(the_entry(remote), "stamp.json")
    body = json.dumps({"seed": "v1"}).encode()
    s3.put_object(Bucket="cache", Key=key, Body=body.replace(b"v1", b"v9"))
    reader = FakeStage(tmp_path / "b")
    run_fake(reader, "read")
    assert reader.runs == 1 and reader.correct()
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and "corrupt" in lines[0], lines


def test_entry_naming_a_missing_object(remote, tmp_path, capsys):
    run_fake(FakeStage(tmp_path / "a"), "read-write")
    s3 = remote.client()
    s3.delete_object(Bucket="cache", Key=_blob_key(the_entry(remote), "out.bin"))
    reader = FakeStage(tmp_path / "b")
    run_fake(reader, "read")
    assert reader.runs == 1 and reader.correct()
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and ("404" in lines[0] or "NoSuchKey" in lines[0]), lines


def test_malformed_entry(remote, tmp_path, capsys):
    run_fake(FakeStage(tmp_path / "a"), "read-write")
    s3 = remote.client()
    key = next(o["Key"] for o in s3.list_objects_v2(Bucket="cache", Prefix="test/entries/")["Contents"])
    s3.put_object(Bucket="cache", Key=key, Body=b'{"format": 1, "files": [')
    reader = FakeStage(tmp_path / "b")
    run_fake(reader, "read")
    assert reader.runs == 1 and reader.correct()
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and "malformed" in lines[0], lines


def test_unreachable_remote(remote, tmp_path, capsys):
    remote.kill()
    stage = FakeStage(tmp_path / "a")
    assert run_fake(stage, "read-write") is None
    assert stage.runs == 1 and stage.correct()
    lines = warnings_in(capsys.readouterr().err)
    assert len(lines) == 1 and "lookup failed" in lines[0], lines  # nothing tried after the lookup failed


def test_failed_stage_stores_nothing(remote, tmp_path):
    from doit.exceptions import TaskFailed

    stage = FakeStage(tmp_path / "a")
    plan = stage.plan()
    assert isinstance(cached(lambda: TaskFailed("boom"), plan, cfg_for(stage.cache, "read-write"))(), TaskFailed)
    assert not remote.client().list_objects_v2(Bucket="cache", Prefix="test/").get("Contents")


# ---------------------------------------------------------------------------------------------------------------
# the real doit, on the real weights and tokenizer stages

TASKS = ("weights", "tokenizer")


def doit_env(server, cache: Path, mode: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEBSD_"))}
    env.update(server.env(), WEBSD_PATHS_CACHE=str(cache), WEBSD_CACHE_REMOTE="s3://cache/doit",
               WEBSD_CACHE_REMOTE_MODE=mode, **extra)
    return env


def tree(cache: Path) -> dict[str, str]:
    root = cache / "models"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_doit_round_trip(s3_server, tmp_path):
    first = run_doit(*TASKS, env=doit_env(s3_server, tmp_path / "a", "read-write"), timeout=600)
    assert first.returncode == 0, first.output
    assert "0 from the remote cache" in first.output and "MB up" in first.output
    second = run_doit(*TASKS, env=doit_env(s3_server, tmp_path / "b", "read"), timeout=600)
    assert second.returncode == 0, second.output
    assert second.executed == set(TASKS)
    for task in TASKS:
        assert f"{task}: from the remote cache" in second.output
    assert "2 from the remote cache" in second.output and "remote" in second.output
    assert tree(tmp_path / "a") == tree(tmp_path / "b") != {}
    # doit recorded the installed outputs as a success: the next run is a no-op
    third = run_doit(*TASKS, env=doit_env(s3_server, tmp_path / "b", "read"), timeout=600)
    assert third.returncode == 0 and third.uptodate == set(TASKS), third.output


def test_doit_two_concurrent_writers(s3_server, tmp_path):
    cmd = [sys.executable, "-m", "doit", *TASKS]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=doit_env(s3_server, tmp_path / name, "read-write"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in ("a", "b")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(not warnings_in(o) for o in outs), outs
    reader = run_doit(*TASKS, env=doit_env(s3_server, tmp_path / "c", "read"), timeout=600)
    assert reader.returncode == 0 and "2 from the remote cache" in reader.output, reader.output
    assert tree(tmp_path / "a") == tree(tmp_path / "c")


def test_doit_wrong_credentials(s3_server, tmp_path):
    wrong = "not-the-secret-7f3a9c"
    res = run_doit(*TASKS, env=doit_env(s3_server, tmp_path / "a", "read-write", AWS_SECRET_ACCESS_KEY=wrong),
                   timeout=600)
    assert res.returncode == 0, res.output
    lines = warnings_in(res.output)
    assert len(lines) == len(TASKS), lines  # one line per stage, then a normal build
    assert all("check the AWS credentials" in line for line in lines), lines
    assert wrong not in res.output and SECRET_KEY not in res.output
    assert (tmp_path / "a" / "models" / "tiny" / "tokenizer" / "vocab.json").is_file()


STREAM_PROBE = """
import os, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from pipeline.remote_cache import Store
from pipeline.fsutil import sha256_file
src, dest = Path(sys.argv[2]), Path(sys.argv[3])
store = Store("s3://cache/stream")
store.blob_state("0" * 64)  # boto3 loaded and connected before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sha = sha256_file(src)
store.upload_blob(src, sha, src.stat().st_size)
store.download_blob(sha, src.stat().st_size, dest)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def test_large_objects_stream_in_flat_memory(remote, tmp_path):
    size = 320 << 20
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for i in range(size // (4 << 20)):
            f.write(payload(str(i), 4 << 20))
    proc = subprocess.run([sys.executable, "-c", STREAM_PROBE, str(ROOT), str(src), str(tmp_path / "back.bin")],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    grew_mb = int(proc.stdout.split()[-1])
    assert (tmp_path / "back.bin").stat().st_size == size
    print(f"\n{size >> 20} MB up and down: the process grew by {grew_mb} MB")
    assert grew_mb < 120, f"a {size >> 20} MB round trip grew the process by {grew_mb} MB"
