"""Reliability benchmark: SIGKILLs at random points of a build, and site switches under a tight request loop.

    .venv/bin/python benchmarks/bench_reliability.py kill --kills 20 [--per-build 5] [section.key=value ...]
    .venv/bin/python benchmarks/bench_reliability.py swap --swaps 100 --requests 100000 [section.key=value ...]

kill: the model stages from scratch (the TVM toolchain is built first and left alone), then ``doit`` in its own
process group, SIGKILLed as a group after a random delay, then ``doit`` again. Each restart is checked: it runs no
task that had finished before the kill (doit printed the start of a later task, so the earlier one had been saved),
and notes a task that ran again after its child had printed "done" (the one moment between a stage's end and its
record). ``--per-build`` kills land in one build (each restart may be the next one killed) before it is let finish;
then no temporary may be left in the cache and the site must be byte-identical with a clean build's (sha256 per
file). A kill point is a uniform draw over the clean build's time, mapped onto the task the clean build was running
then and how far into it: the restart is killed that far into that task (or the first one after it, should it not
run). So kills land in every stage in proportion to its length, however much slower restarts run than the clean
build, and each restart makes progress (a per-restart delay would keep killing the first long stage).

swap: serves the site with ``doit serve`` and switches it between two complete versions (as configured, and with
``--other``, default ``model.image_size=32``; both built first) by running the ``site`` stage's function (``pipeline.page.site.run``), while
client processes request every site file in a loop on 127.0.0.1. Counts non-200 answers and bodies whose sha256 is
neither version's.

Both write ``benchmarks/results/reliability-<kind>-<model>-<dtype>.{json,md}`` with the commit and the sha256 of
the site measured.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.fsutil import sha256_json, versions_dir  # noqa: E402
from pipeline.layout import Layout  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# dot-names that are not temporaries: doit's database and lock, the md5 memo
KEPT_DOT_NAMES = {".doit.sqlite3", ".doit.sqlite3-journal", ".doit.lock", ".file-md5.json"}


def doit_popen(args: list[str], env: dict) -> subprocess.Popen:
    # unbuffered: the kill loop times kills from the moment a task's start line appears
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"},
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def doit(args: list[str], env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def started(output: str) -> list[str]:
    return re.findall(r"^\.  (\S+)", output, re.M)


def site_files(site: Path) -> dict[str, str]:
    root = site.resolve()
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(cache: Path) -> list[str]:
    """Dot-named leftovers (every temporary of the pipeline is one: atomic_path, scratch_dir, site versions) outside
    the TVM source tree and npm folders, whose dot-files are their own."""
    found = []
    for dirpath, dirnames, filenames in os.walk(cache):
        rel = Path(dirpath).relative_to(cache)
        if rel.parts[:1] == ("tvm",) and len(rel.parts) >= 3 and rel.parts[2] == "src" or "node_modules" in rel.parts:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            if name.startswith(".") and name not in KEPT_DOT_NAMES:
                found.append(str(rel / name))
    return found


def clean_model_outputs(layout: Layout) -> None:
    shutil.rmtree(layout.model_dir, ignore_errors=True)
    for p in (layout.site_dir, versions_dir(layout.site_dir)):
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.exists():
            shutil.rmtree(p)


class Run:
    """``doit *cli`` in its own process group, its output lines read as they come, each with its arrival time."""

    def __init__(self, cli: list[str], env: dict):
        self.proc = doit_popen(cli, env)
        self.start = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.start, line))

    def task_start(self, task: str | None) -> float | None:
        """Seconds into the run at which ``task`` started (0 for None: the run's start), None if it has not."""
        if task is None:
            return 0.0
        return next((t for t, line in list(self.lines) if line.rstrip() == f".  {task}"), None)

    def finish(self) -> str:
        self.proc.wait()
        self._reader.join(timeout=60)
        return "".join(line for _, line in self.lines)


def kill_point(timeline: list[tuple[float, str]], t: float) -> tuple[str | None, float]:
    """The task a clean build was running ``t`` seconds in (None: doit had not started one) and how far into it."""
    task, since = None, 0.0
    for start, name in timeline:
        if start > t:
            break
        task, since = name, start
    return task, t - since


def kill_loop(args, cli: list[str], env: dict, layout: Layout) -> dict:
    print("toolchain first (not measured)", flush=True)
    doit(["tvm_build", "tvmjs_runtime", *cli], env)
    clean_model_outputs(layout)
    clean = Run(cli, env)
    out = clean.finish()
    if clean.proc.returncode != 0:
        sys.exit(f"the clean build failed:\n{out[-3000:]}")
    clean_seconds = time.monotonic() - clean.start
    timeline = [(t, line.split()[1]) for t, line in clean.lines if line.startswith(".  ")]
    reference = site_files(layout.site_dir)
    print(f"clean build: {clean_seconds:.0f} s, {len(timeline)} tasks, site {len(reference)} files", flush=True)
    rng = random.Random(args.seed)
    trials, builds = [], []
    while len(trials) < args.kills:
        clean_model_outputs(layout)
        finished: set[str] = set()  # saved before some kill of this build: no later run may start them again
        build_trials = []
        points = sorted(rng.uniform(0.0, clean_seconds) for _ in range(min(args.per_build, args.kills - len(trials))))
        while True:
            run = Run(cli, env)
            killed, target = False, None
            if len(build_trials) < len(points):
                target = kill_point(timeline, points[len(build_trials)])
                task, offset = target
                if task in finished:  # doit's order among independent tasks varies: it ran before this time
                    task = None
                # should the target not start (up to date after all), the first task after it in the clean build
                later = [name for start, name in timeline if start > points[len(build_trials)]]
                while run.proc.poll() is None:
                    since = run.task_start(task)
                    if since is None:
                        since = next((t for t in map(run.task_start, later) if t is not None), None)
                    if since is not None and time.monotonic() - run.start >= since + offset:
                        os.killpg(run.proc.pid, signal.SIGKILL)
                        killed = True
                        break
                    time.sleep(0.02)
            out = run.finish()
            ran = started(out)
            if build_trials:  # this run is the rebuild after the last kill
                build_trials[-1]["rerun_finished"] = sorted(finished & set(ran))
                build_trials[-1]["rerun_after_done_line"] = sorted(build_trials[-1].pop("done") & set(ran))
            if not killed:
                if run.proc.returncode != 0:
                    sys.exit(f"a rebuild failed:\n{out[-3000:]}")
                if len(build_trials) < len(points):
                    print(f"the build finished before its kill point {len(build_trials) + 1} "
                          f"({target[0]} + {target[1]:.0f} s)", flush=True)
                break
            # a task whose successor started had been saved; the last one started may have been mid-save
            finished |= set(ran[:-1])
            done = {stage if sub == "all" else f"{stage}_{sub}"
                    for stage, sub in re.findall(r"^(\w+) (\w+): done in", out, re.M)}
            build_trials.append({"point_s": round(points[len(build_trials)], 1), "target": target[0],
                                 "offset_s": round(target[1], 1), "killed_in": ran[-1] if ran else None,
                                 "finished_before": len(finished), "done": done - finished})
            print(f"kill {len(trials) + len(build_trials)}: clean-build point {points[len(build_trials) - 1]:.0f} s "
                  f"({target[0]} + {target[1]:.1f} s), killed in {build_trials[-1]['killed_in']}; "
                  f"{len(finished)} tasks finished before it", flush=True)
        trials += build_trials
        files = site_files(layout.site_dir)
        builds.append({"kills": len(build_trials), "temporaries": temporaries(layout.cache),
                       "site_identical": files == reference,
                       "differing": sorted(k for k in set(files) | set(reference) if files.get(k) != reference.get(k))})
        if args.partial:  # what is measured so far, should the run be stopped early
            write_results("kill", args.cfg, _kill_summary(clean_seconds, reference, trials, builds))
        print(f"build {len(builds)}: {len(build_trials)} kills, reruns of finished tasks "
              f"{sum(len(t['rerun_finished']) for t in build_trials)}, temporaries {builds[-1]['temporaries']}, "
              f"site identical {builds[-1]['site_identical']}", flush=True)
    return _kill_summary(clean_seconds, reference, trials, builds)


def _kill_summary(clean_seconds: float, reference: dict, trials: list, builds: list) -> dict:
    return {"clean_build_s": round(clean_seconds, 1), "site_sha256": sha256_json(reference), "trials": trials,
            "builds": builds, "kills": len(trials),
            "rerun_finished_total": sum(len(t["rerun_finished"]) for t in trials),
            "rerun_after_done_line_total": sum(len(t["rerun_after_done_line"]) for t in trials),
            "builds_with_temporaries": sum(bool(b["temporaries"]) for b in builds),
            "builds_with_other_site": sum(not b["site_identical"] for b in builds),
            "kills_by_task": dict(sorted(Counter(str(t["killed_in"]) for t in trials).items()))}


# ---------------------------------------------------------------------------------------------------------------
# swap


def _client(port: int, valid: dict[str, list[str]], stop, counts, done, seed: int) -> None:
    paths = sorted(valid)
    rng = random.Random(seed)
    ok = non200 = mismatched = 0
    bad: list[str] = []
    while not stop.is_set():
        rng.shuffle(paths)
        for path in paths:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/" + path)
                resp = conn.getresponse()
                body = resp.read()
            except OSError as e:
                non200 += 1
                bad.append(f"{path}: {e}")
                continue
            finally:
                conn.close()
            if resp.status != 200:
                non200 += 1
                bad.append(f"{path}: {resp.status}")
            elif hashlib.sha256(body).hexdigest() not in valid[path]:
                mismatched += 1
                bad.append(f"{path}: body of no version")
            else:
                ok += 1
            with done.get_lock():
                done.value += 1
    counts.put({"ok": ok, "non200": non200, "mismatched": mismatched, "bad": bad[:20]})


def swap_loop(args, cli: list[str], env: dict, cfg) -> dict:
    from pipeline.page import site

    layout = Layout.from_config(cfg)
    if args.other:
        # the other version: a setting that is part of the output paths (pipeline.layout): both builds stay on disk
        key, _, value = args.other.partition("=")
        print(f"building the two versions (as configured, and with {args.other})", flush=True)
        doit([*cli, args.other, "model.verify=off"], env)  # the CPU check adds nothing to this loop
        doit(cli, env)
        cfg_b = load_config(cli={**dict(a.split("=", 1) for a in cli), key: value})
    else:  # --other '': the site's inputs are built already; both versions have the same bytes
        cfg_b = cfg
    site.run(cfg)
    a = site_files(layout.site_dir)
    site.run(cfg_b)
    b = site_files(layout.site_dir)
    if set(a) != set(b) or (a == b) != (not args.other):
        sys.exit("the two site versions must have the same files, with different bytes unless --other ''")
    valid = {path: [a[path], b[path]] for path in a}
    port = args.port
    server = subprocess.Popen([sys.executable, "-m", "doit", "serve", f"web.port={port}", *cli], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for(port)
        stop, counts, done = mp.Event(), mp.Queue(), mp.Value("q", 0)
        clients = [mp.Process(target=_client, args=(port, valid, stop, counts, done, i))
                   for i in range(args.clients)]
        for c in clients:
            c.start()
        start = time.monotonic()
        swap_times = []
        for i in range(args.swaps):  # spread over the requests: swap i once (i + 1) / swaps of them were answered
            while done.value < (i + 1) * args.requests / (args.swaps + 1):
                time.sleep(0.01)
            t = time.monotonic()
            site.run(cfg if i % 2 else cfg_b)
            swap_times.append(time.monotonic() - t)
        while done.value < args.requests:
            time.sleep(0.05)
        stop.set()
        results = [counts.get(timeout=120) for _ in clients]
        for c in clients:
            c.join()
        seconds = time.monotonic() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    total = {k: sum(r[k] for r in results) for k in ("ok", "non200", "mismatched")}
    return {"swaps": args.swaps, "versions_differ": a != b, "clients": args.clients, "seconds": round(seconds, 1),
            "requests": sum(total.values()), **total, "bad_examples": [b for r in results for b in r["bad"]][:20],
            "median_swap_s": round(sorted(swap_times)[len(swap_times) // 2], 3),
            "site_sha256": {"a": sha256_json(a), "b": sha256_json(b)}, "files": len(a),
            "versions_kept": len([p for p in versions_dir(layout.site_dir).iterdir() if not p.name.startswith(".")])}


def _wait_for(port: int) -> None:
    import socket

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"doit serve did not listen on {port}")


def write_results(kind: str, cfg, result: dict) -> Path:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    record = {"kind": kind, "model": cfg.model.name, "dtype": cfg.model.dtype, "commit": commit,
              "dirty_tree": dirty, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"reliability-{kind}-{Path(cfg.model.name).name}-{cfg.model.dtype}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Reliability: {kind}, {cfg.model.name} {cfg.model.dtype}", "",
             f"commit {commit}{' (with local edits)' if dirty else ''}, {record['date']}", ""]
    for key, value in record.items():
        if not isinstance(value, (list, dict)) or key == "site_sha256":
            lines.append(f"- {key}: {value}")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".json")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("kill", "swap"))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--per-build", type=int, default=1, help="kills in one build before it may finish")
    parser.add_argument("--seed", type=int, default=0, help="of the random kill delays")
    parser.add_argument("--partial", action="store_true", help="write the results after each build")
    parser.add_argument("--swaps", type=int, default=100)
    parser.add_argument("--requests", type=int, default=100_000, help="at least this many, the swaps spread over them")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--other", default="model.image_size=32",
                        help="the second site version's setting ('': the same site, already built, swapped anyway)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_intermixed_args(argv)
    cfg = args.cfg = load_config(cli=dict(a.split("=", 1) for a in args.overrides))
    env = dict(os.environ)
    layout = Layout.from_config(cfg)
    result = kill_loop(args, args.overrides, env, layout) if args.kind == "kill" else \
        swap_loop(args, args.overrides, env, cfg)
    path = write_results(args.kind, cfg, result)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
