"""Benchmark of the shared build cache (pipeline/remote_cache.py): a fresh clone with an empty cache builds against a
remote that another checkout filled.

    .venv/bin/python benchmarks/bench_remote_cache.py [--phases fill,fresh] [--work /tmp/websd-bench-remote] \\
        [section.key=value ...]            # e.g. model.name=sd15-random model.dtype=float16

A real S3 server (SeaweedFS, tests/s3_server.py) runs on 127.0.0.1 with its data in ``<work>/s3`` (kept between
phases, so ``--phases fresh`` alone re-measures against the last fill):

* ``fill``: this checkout builds the default tasks into an empty cache ``<work>/fill-cache`` with
  ``cache.remote_mode=read-write`` - the cold build, timed, which stores every cacheable stage;
* ``fresh``: ``git clone`` of this checkout's HEAD into ``<work>/clone`` (the shared ``.venv`` and
  ``web/node_modules`` linked in, as ./setup.sh would have installed them), an empty cache, ``cache.remote_mode=
  read``: the timed ``doit`` is what a new team member or CI machine pays.

Each phase is two timed ``doit`` runs: the TVM toolchain (``doit tvm_build tvmjs_runtime``), then the plain ``doit``
(model stages and site). The TVM checkout is not in the remote cache (pipeline/stages.py says why): both phases make
theirs from the configured TVM mirror (the user config), inside the toolchain run.
Writes ``benchmarks/results/remote-cache-<model>-<dtype>.{json,md}`` with the commit, the wall times, the bytes
moved, the tasks taken from the remote, and the sha256 of the site each phase built (they must be equal).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.fsutil import sha256_json, write_json  # noqa: E402
from tests.s3_server import SeaweedS3  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PREFIX = "s3://cache/bench"


def site_digest(cache: Path) -> str:
    """sha256 over the site's manifest and every model file it lists: what was built, byte for byte."""
    site = (cache / "site").resolve()
    manifest = json.loads((site / "model" / "manifest.json").read_text())
    return sha256_json({"files": manifest["files"], "manifest": (site / "model" / "manifest.json").read_text()})


def doit(cwd: Path, cache: Path, mode: str, server: SeaweedS3, args: list[str], log: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEBSD_PATHS", "WEBSD_CACHE"))}
    env.update(server.env(), WEBSD_PATHS_CACHE=str(cache), WEBSD_CACHE_REMOTE=PREFIX, WEBSD_CACHE_REMOTE_MODE=mode)
    start = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # the checkout's own .venv (in the clone: the link to the shared one), as a user of that checkout runs it
    proc = subprocess.run([str(cwd / ".venv" / "bin" / "python"), "-m", "doit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.time() - start
    # the largest process of the run (ru_maxrss of waited-for children, a running maximum: only a rise is its own);
    # a hit streams in doit's own process, so this is where flat memory shows
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"doit failed in {cwd} (exit {proc.returncode}); see {log}")
    out = proc.stdout + proc.stderr
    moved = re.search(r"remote cache: ([\d.]+)\s+MB down,\s+([\d.]+)\s+MB up", out)
    return {"seconds": round(seconds, 1),
            "remote_tasks": sorted(re.findall(r"^(\S+): from the remote cache", out, re.M)),
            "warnings": re.findall(r"^warning: .*$", out, re.M),
            "mb_down": float(moved.group(1)) if moved else 0.0, "mb_up": float(moved.group(2)) if moved else 0.0,
            "ran": sorted(re.findall(r"^\.  (\S+)", out, re.M)),
            "peak_rss_mb": round(peak / 1024, 1) if peak > before else None}


def run_doit(cwd: Path, cache: Path, mode: str, server: SeaweedS3, overrides: list[str], log: Path) -> dict:
    """Two timed runs: the TVM toolchain (checkout, build selection, web runtime), then the plain ``doit`` (the
    model stages and the site); ``seconds`` is their sum."""
    tool = doit(cwd, cache, mode, server, ["tvm_build", "tvmjs_runtime", *overrides], log.with_suffix(".tvm.log"))
    rest = doit(cwd, cache, mode, server, overrides, log)
    return {"seconds": round(tool["seconds"] + rest["seconds"], 1), "toolchain_seconds": tool["seconds"],
            "model_stages_seconds": rest["seconds"],
            **{k: sorted(set(tool[k]) | set(rest[k])) for k in ("remote_tasks", "ran")},
            "warnings": tool["warnings"] + rest["warnings"],
            "peak_rss_mb": {"toolchain": tool["peak_rss_mb"], "model_stages": rest["peak_rss_mb"]},
            **{k: round(tool[k] + rest[k], 1) for k in ("mb_down", "mb_up")}, "site": site_digest(cache)}


def fresh_clone(dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "checkout", "-q", head], cwd=dest, check=True)
    (dest / ".venv").symlink_to((ROOT / ".venv").resolve())
    (dest / "web" / "node_modules").symlink_to((ROOT / "web" / "node_modules").resolve())
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phases", default="fill,fresh")
    ap.add_argument("--work", type=Path, default=Path("/tmp/websd-bench-remote"))
    ap.add_argument("overrides", nargs="*", help="section.key=value")
    args = ap.parse_args()
    phases = args.phases.split(",")
    cfg = dict(o.split("=", 1) for o in args.overrides)
    name = f"remote-cache-{cfg.get('model.name', 'tiny')}-{cfg.get('model.dtype', 'float32')}"
    out_json = RESULTS / f"{name}.json"
    result = json.loads(out_json.read_text()) if out_json.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    result.update(commit=commit, dirty=dirty, overrides=args.overrides, cores=os.cpu_count(),
                  date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    args.work.mkdir(parents=True, exist_ok=True)
    server = SeaweedS3(args.work / "s3").start()
    try:
        if "fill" in phases:
            cache = args.work / "fill-cache"
            shutil.rmtree(cache, ignore_errors=True)
            print("fill: a cold build of this checkout, storing to the remote ...", flush=True)
            result["fill"] = {**run_doit(ROOT, cache, "read-write", server, args.overrides, args.work / "fill.log"),
                              "commit": commit, "dirty": dirty}
            print(f"fill: {result['fill']['seconds']} s, {result['fill']['mb_up']} MB up", flush=True)
        if "fresh" in phases:
            clone = fresh_clone(args.work / "clone")
            cache = args.work / "fresh-cache"
            shutil.rmtree(cache, ignore_errors=True)
            print(f"fresh: a clone of {commit[:10]}, empty cache, reading the remote ...", flush=True)
            result["fresh"] = {**run_doit(clone, cache, "read", server, args.overrides, args.work / "fresh.log"),
                               "commit": commit}
            print(f"fresh: {result['fresh']['seconds']} s, {result['fresh']['mb_down']} MB down, "
                  f"{len(result['fresh']['remote_tasks'])} tasks from the remote", flush=True)
    finally:
        server.stop()
    fill, fresh = result.get("fill"), result.get("fresh")
    if fill and fresh:
        result["same_site"] = fill["site"] == fresh["site"]
    write_json(out_json, result)
    lines = [f"# Remote build cache: {' '.join(args.overrides) or 'tiny float32'}", "",
             f"commit {commit}{' (dirty)' if dirty else ''}, {os.cpu_count()} cores, {result['date']}; "
             f"SeaweedFS on 127.0.0.1 (tests/s3_server.py); `benchmarks/bench_remote_cache.py`", "",
             "| phase | wall: all | TVM toolchain | model stages + site | MB down | MB up | from the remote | "
             "ran locally |", "|---|---|---|---|---|---|---|---|"]
    for phase in ("fill", "fresh"):
        r = result.get(phase)
        if r:
            local = [t for t in r["ran"] if t not in r["remote_tasks"]]
            lines.append(f"| {phase} {r.get('commit', '')[:7]} | {r['seconds']} s | {r['toolchain_seconds']} s | {r['model_stages_seconds']} s "
                         f"| {r['mb_down']} | {r['mb_up']} | {len(r['remote_tasks'])} | {', '.join(local)} |")
    if "same_site" in result:
        lines += ["", f"Same site bytes in both (sha256 over the manifest and its files): {result['same_site']} "
                      f"(`{fresh['site'][:16]}`)."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_json} and {name}.md")
    return 0 if result.get("same_site", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
