"""Benchmark of the model stages: per-stage wall time and peak RSS, no-op ``doit``, UNet-only rebuild, link time.

    .venv/bin/python benchmarks/bench_model_stages.py                       # sd15-random, float16 (the scale target)
    .venv/bin/python benchmarks/bench_model_stages.py model.name=tiny model.dtype=float32

It drives the real ``doit`` (the TVM toolchain is built first and not timed), starts the model stages from scratch,
and writes ``benchmarks/results/<model>-<dtype>.json`` and a Markdown table (``.md``) that the README links.
Targets on the 2-core machine: no-op <= 0.5 s; dev link <= 2 s; all model stages <= 10 min with peak RSS <= 6 GB;
UNet-only rebuild <= 40 % of the full model-stage time. It reports what it measures, met or not.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.layout import Layout  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# verification runs the unscheduled llvm build on the CPU: not part of what a browser build needs
MODEL_TASKS = ["weights", "tokenizer", "site"]


def doit(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def executed(output: str) -> list[str]:
    return [line[3:].strip() for line in output.splitlines() if line.startswith(".  ")]


def stats(cache: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((cache / "stats").glob("*.json"))}


def main(argv: list[str]) -> int:
    overrides = dict(a.split("=", 1) for a in argv) or {"model.name": "sd15-random", "model.dtype": "float16"}
    cli = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(cli=overrides)
    layout = Layout.from_config(cfg)
    print(f"benchmark: {cfg.model.name} {cfg.model.dtype}; toolchain first (not timed)", flush=True)
    doit("tvm_build", "tvmjs_runtime", *cli)

    # from scratch: the model's whole cache directory (weights, traces, every variant) and its stage stats
    shutil.rmtree(layout.model_dir, ignore_errors=True)
    shutil.rmtree(layout.cache / "stats", ignore_errors=True)
    full_seconds, out = doit(*MODEL_TASKS, *cli)
    ran = executed(out)
    per_stage = stats(layout.cache)

    noop = [doit(*MODEL_TASKS, *cli)[0] for _ in range(5)]
    noop_plain = [doit(*cli)[0] for _ in range(5)]  # every default task, the toolchain's checks included

    # a UNet-only rebuild, as a user makes one: a behaviour change in the UNet wrapper's module
    wrapper = ROOT / "pipeline" / "submodels" / "unet.py"
    original = wrapper.read_text()
    wrapper.write_text(original + "\n_BENCHMARK_EDIT = 1  # bench_model_stages.py: a UNet-only change\n")
    try:
        unet_seconds, unet_out = doit(*MODEL_TASKS, *cli)
    finally:
        wrapper.write_text(original)
    doit(*MODEL_TASKS, *cli)  # back to the original wrapper (not timed)
    link = {t: s["seconds"] for t, s in stats(layout.cache).items() if t.startswith("link_")}

    peak_rss_mb = max((s["peak_rss_mb"] for s in per_stage.values()), default=0)
    result = {
        "model": cfg.model.name, "dtype": cfg.model.dtype, "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores",
        "full_model_stages_seconds": round(full_seconds, 1), "tasks_ran": ran,
        "per_stage": per_stage, "peak_rss_mb": peak_rss_mb,
        "noop_seconds_median": round(statistics.median(noop), 3), "noop_seconds_runs": [round(n, 3) for n in noop],
        "noop_plain_doit_seconds": round(statistics.median(noop_plain), 3),
        "noop_plain_doit_seconds_runs": [round(n, 3) for n in noop_plain],
        "unet_rebuild_seconds": round(unet_seconds, 1), "unet_rebuild_tasks": executed(unet_out),
        "unet_rebuild_ratio": round(unet_seconds / full_seconds, 3),
        "link_seconds": link,
    }
    targets = {
        "no-op doit <= 0.5 s": result["noop_seconds_median"] <= 0.5,
        "plain no-op doit <= 0.3 s": result["noop_plain_doit_seconds"] <= 0.3,
        "UNet wrapper edit does not re-shard": not any(t.startswith("shard_") for t in result["unet_rebuild_tasks"]),
        "dev link <= 2 s (link task incl. Python start)": max(link.values(), default=99) <= 2,
        "all model stages <= 10 min": full_seconds <= 600,
        "peak RSS <= 6 GB": peak_rss_mb <= 6144,
        "UNet-only rebuild <= 40 %": result["unet_rebuild_ratio"] <= 0.4,
    }
    result["targets"] = targets
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"{Path(cfg.model.name).name}-{cfg.model.dtype}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"### {cfg.model.name} {cfg.model.dtype} ({result['when']}, {result['machine']})", "",
             "| task | wall s | peak RSS MB |", "|---|---:|---:|"]
    lines += [f"| {t} | {s['seconds']} | {s['peak_rss_mb']} |" for t, s in per_stage.items()]
    lines += ["", f"- all model stages: {result['full_model_stages_seconds']} s; peak RSS {peak_rss_mb} MB",
              f"- no-op `doit` (model tasks): median {result['noop_seconds_median']} s of {len(noop)} runs",
              f"- no-op plain `doit` (noop_plain_doit_seconds): median {result['noop_plain_doit_seconds']} s of "
              f"{len(noop_plain)} runs",
              f"- UNet-only rebuild (an edit of pipeline/submodels/unet.py): {result['unet_rebuild_seconds']} s = "
              f"{result['unet_rebuild_ratio']:.0%} of full ({', '.join(result['unet_rebuild_tasks'])})",
              f"- link tasks: {', '.join(f'{k} {v} s' for k, v in link.items())}", ""]
    lines += [f"- {'met' if ok else 'NOT met'}: {t}" for t, ok in targets.items()]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
