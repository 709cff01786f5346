"""Benchmark of ``doit tvm_build tvm.build=source`` on a real TVM checkout: wall time and peak memory, ccache cold
and warm.

    WEBSD_TVM_MIRROR=<apache/tvm mirror> WEBSD_TVM_FFI_MIRROR=<apache/tvm-ffi mirror> \\
        .venv/bin/python benchmarks/bench_tvm_build.py [--phases cold,warm] [section.key=value ...]

It drives the real ``doit`` on the configured cache (``paths.cache``; point ``WEBSD_PATHS_CACHE`` elsewhere to keep
your own build). The checkout is made first and not timed. Each phase removes the build (``doit clean tvm_build``)
and rebuilds it:

* ``cold``: with an empty ccache directory - every compile is a miss;
* ``warm``: with the ccache the cold phase filled - what rebuilding a wiped build directory costs.

ccache gets its own directory (``<cache>/bench/ccache``) so the benchmark never empties the user's cache.
Peak memory is the largest *sum* of RSS over doit's whole process tree, sampled every second: ninja runs several
compilers at once, and ``ru_maxrss`` would only report the single biggest one (printed too, as ``max_single``).
Writes ``benchmarks/results/tvm-source-build.{json,md}`` for the default ``tvm.version`` and
``tvm-source-build-<version>.{json,md}`` for another (``tvm.version=0.21.0``); a run of one phase keeps the other
phase's last figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.layout import Layout  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, RSS bytes) for every process readable in /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            rss_pages = int(Path(entry.path, "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        # the command name may contain spaces and parentheses: the fields after the last ')' are fixed
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), rss_pages * PAGE)
    return table


def tree_rss(root: int) -> int:
    table = process_table()
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(table[pid][1] for pid in tree if pid in table)


class TreeRssSampler(threading.Thread):
    def __init__(self, root: int, interval: float = 1.0):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak, self.stop = root, interval, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss(self.root))


def doit(*args: str, env: dict) -> dict:
    """Run doit; wall and CPU seconds, sampled peak tree RSS and the largest single process's ru_maxrss."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeRssSampler(proc.pid)
    sampler.start()
    output = []
    for line in proc.stdout:  # stream doit's progress so a long phase is visibly alive
        print(line, end="", flush=True)
        output.append(line)
    # wait4: this child's rusage, whose ru_maxrss covers its reaped descendants (the compilers) too
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    # CPU time of the whole tree (the reaped compilers included): unlike wall time, other load does not inflate it
    figures = {"seconds": round(seconds, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
               "peak_tree_rss_mb": round(sampler.peak / 2**20),
               "max_single_process_rss_mb": round(usage.ru_maxrss / 1024),
               "ran": [line[3:].strip() for line in output if line.startswith(".  ")]}
    if proc.returncode != 0:  # the figures still say how far a long build got
        sys.exit(f"doit {' '.join(args)} failed (exit {proc.returncode}) after {figures}:\n{''.join(output)[-3000:]}")
    return figures


def ccache_stats(env: dict) -> dict[str, int]:
    out = subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True, text=True, check=True).stdout
    counters = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
    hits = int(counters.get("direct_cache_hit", 0)) + int(counters.get("preprocessed_cache_hit", 0))
    return {"hits": hits, "misses": int(counters.get("cache_miss", 0))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="cold,warm", help="comma-separated: cold, warm (default: both)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write tvm-source-build.{json,md}")
    parser.add_argument("overrides", nargs="*", help="section.key=value, as for doit")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    if set(phases) - {"cold", "warm"}:
        parser.error(f"--phases: unknown phase in {args.phases!r}; use cold and/or warm")
    if not shutil.which("ccache"):
        sys.exit("error: ccache not found: run ./setup.sh (the benchmark measures ccache cold vs warm)")

    overrides = {"tvm.build": "source", **dict(a.split("=", 1) for a in args.overrides)}
    cli = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(cli=overrides)
    layout = Layout.from_config(cfg)
    ccache_dir = layout.cache / "bench" / "ccache"
    env = dict(os.environ, CCACHE_DIR=str(ccache_dir))

    print(f"benchmark: tvm_build source, TVM {cfg.tvm.ref or cfg.tvm.version}; checkout first (not timed)", flush=True)
    doit("tvm_checkout", *cli, env=env)

    from pipeline.config import TvmConfig

    stem = "tvm-source-build" if cfg.tvm.version == TvmConfig().version else f"tvm-source-build-{cfg.tvm.version}"
    result_path = args.results / f"{stem}.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    for phase in phases:
        if phase == "cold":
            shutil.rmtree(ccache_dir, ignore_errors=True)
        subprocess.run(["ccache", "-z"], env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "doit", "clean", "tvm_build", *cli], cwd=ROOT, env=env, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
        print(f"--- {phase}: doit tvm_build {' '.join(cli)}", flush=True)
        figures = doit("tvm_build", *cli, env=env)
        figures.update(ccache=ccache_stats(env), when=time.strftime("%Y-%m-%d %H:%M"),
                       machine=f"{os.cpu_count()} cores", jobs=cfg.tvm.build_jobs or "ninja default",
                       tvm=cfg.tvm.resolved_ref, how="doit tvm_build (this script)")
        if figures["ran"] != ["tvm_build"]:
            sys.exit(f"{phase}: expected exactly tvm_build to run, doit ran {figures['ran']}")
        result[phase] = figures
        print(f"--- {phase}: {figures}", flush=True)

    args.results.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"### `doit tvm_build tvm.build=source` on real TVM {cfg.tvm.resolved_ref}", "",
             "| phase | when | machine | wall s | CPU s | peak tree RSS MB | largest process MB | ccache hits / misses |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for phase in ("cold", "warm"):
        if phase in result:
            f = result[phase]
            lines.append(f"| {phase} | {f['when']} | {f['machine']} | {f['seconds']} | {f.get('cpu_seconds', '')} | "
                         f"{f['peak_tree_rss_mb']} | "
                         f"{f['max_single_process_rss_mb']} | {f['ccache']['hits']} / {f['ccache']['misses']} |")
    notes = [f"- {phase}: {result[phase]['note']}" for phase in ("cold", "warm") if result.get(phase, {}).get("note")]
    if notes:
        lines += ["", *notes]
    (args.results / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
