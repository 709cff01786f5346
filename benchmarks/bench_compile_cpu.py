"""Benchmark: CPU time of a submodel's WebGPU build (Relax pipeline, schedules, codegen) in this tree against an
earlier commit, in the same run, and the WebGPU dispatches one call of the built module makes (counted statically:
each kernel call of the lowered module's Relax functions, times the WGSL kernels of that function). The GPU-speed
work must keep the CPU time within 1.5x.

    .venv/bin/python benchmarks/bench_compile_cpu.py --ref <commit> [--sub unet] [--model sd15-random]
        [--dtype float16] [--repeats 3] [--cache DIR] [--ref-cache DIR]

Needs the trace already built (``doit trace_<sub> model.name=...``). Each measurement is a fresh Python process
(``pipeline.webgpu.build.build`` in-process, nothing written); the reference runs from a temporary git worktree
of ``--ref`` that reads ``--ref-cache`` (default: this tree's cache; give it the reference's own trace when the
traced graph changed, e.g. fused attention). CPU time (user + system of the process, every thread) is quoted, since
it depends less than wall time on what else the machine runs. Writes ``compile-cpu-<model>-<sub>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.fsutil import write_json  # noqa: E402

MEASURE = """
import json, os, sys, time
sys.path.insert(0, os.getcwd())
from pipeline.config import load_config
try:  # the layout since the WebGPU compiler got its package; before, all of it was in pipeline.model.compile
    from pipeline.model.compile import import_relax
    from pipeline.webgpu.build import build as build_webgpu
except ImportError:
    from pipeline.model.compile import import_relax, build_webgpu
cfg = load_config(cli={"model.name": sys.argv[1], "model.dtype": sys.argv[2], "paths.cache": sys.argv[4]})
mod, info = import_relax(cfg, sys.argv[3])
c0, w0 = time.process_time(), time.perf_counter()
lowered, _, use = build_webgpu(mod, sys.argv[3], "default", [p["name"] for p in info["params"]])
cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - w0
import collections, tvm
from tvm import relax
calls = collections.Counter()
def visit(e):
    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.GlobalVar) and e.op in lowered \
            and not isinstance(lowered[e.op], relax.Function):
        f = lowered[e.op]
        calls[str(f.attrs["global_symbol"]) if f.attrs is not None and "global_symbol" in f.attrs else e.op.name_hint] += 1
for f in lowered.functions.values():
    if isinstance(f, relax.Function):
        relax.analysis.post_order_visit(f.body, visit)
kernels = collections.Counter()
for k in use.kernels:
    kernels[k.name.rsplit("_kernel", 1)[0]] += 1
print(json.dumps({"cpu_s": cpu_s, "wall_s": wall_s, "kernels": len(use.kernels),
                  "dispatches": sum(n * kernels[name] for name, n in calls.items())}))
"""


def measure(tree: Path, args, cache: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, args.model, args.dtype, args.sub, str(cache)], cwd=tree,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build in {tree} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="the commit to compare with")
    ap.add_argument("--sub", default="unet")
    ap.add_argument("--model", default="sd15-random")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=ROOT / "cache")
    ap.add_argument("--ref-cache", type=Path, help="the reference's cache (default: --cache)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    runs = {"reference": [], "current": []}
    with tempfile.TemporaryDirectory() as tmp:
        ref_tree = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(ref_tree), args.ref], cwd=ROOT, check=True)
        try:
            for i in range(args.repeats):  # interleaved, so both see the same machine load
                for name, tree, cache in (("reference", ref_tree, args.ref_cache or args.cache),
                                          ("current", ROOT, args.cache)):
                    runs[name].append(measure(tree, args, cache.resolve()))
                    print(f"{name} {i + 1}: {runs[name][-1]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT)
    med = {k: {m: round(statistics.median(r[m] for r in v), 1) for m in ("cpu_s", "wall_s", "dispatches")}
           for k, v in runs.items()}
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "dtype": args.dtype, "sub": args.sub,
              "reference": args.ref, "current": head, "runs": runs, "median": med,
              "cpu_ratio": round(med["current"]["cpu_s"] / med["reference"]["cpu_s"], 2)}
    stem = f"compile-cpu-{args.model}-{args.sub}"
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"{stem}.json", report)
    md = (f"### WebGPU build of {args.model} {args.sub} ({args.dtype}): CPU time, {report['date']}\n\n"
          f"| tree | CPU s (median of {args.repeats}) | wall s | dispatches per call |\n|---|---:|---:|---:|\n"
          + "".join(f"| {commit} ({name}) | {med[name]['cpu_s']} | {med[name]['wall_s']} | "
                    f"{int(med[name]['dispatches'])} |\n" for name, commit in (("reference", args.ref), ("current", head)))
          + f"\n- current / reference CPU time: {report['cpu_ratio']}x (target: at most 1.5x)\n")
    (args.results / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
