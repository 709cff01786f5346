"""Benchmark of a LoRA change: which tasks a ``model.lora`` change re-runs, and how long the rebuild takes.

    .venv/bin/python benchmarks/bench_lora_rebuild.py                                  # tiny, float32
    .venv/bin/python benchmarks/bench_lora_rebuild.py model.name=sd15-random model.dtype=float16

It drives the real ``doit`` on the site (``site``, plus ``verify`` where the model is CPU-verified): first the site
without LoRA (not timed), then a LoRA made here with peft (random, rank 4, on the UNet's and the text encoder's
attention projections, as diffusers' training scripts make one) at scale 0.8, then only its scale (0.4), then back
to no LoRA. Each step's wall time and the tasks it ran go to ``benchmarks/results/lora-rebuild-<model>-<dtype>.json``
and ``.md``, with the commit and the sha256 of the LoRA file and of the site's manifest. Target (issue 22): no
trace, compile or link task in a LoRA rebuild. It reports what it measures, met or not.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_model_stages import doit, executed, stats  # noqa: E402
from pipeline import models  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.layout import Layout  # noqa: E402
from pipeline.model import verify_policy  # noqa: E402
from tests.fixtures import make_lora  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GRAPH_STAGES = ("trace_", "compile_", "link_")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main(argv: list[str]) -> int:
    overrides = dict(a.split("=", 1) for a in argv) or {"model.name": "tiny", "model.dtype": "float32"}
    cli = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(cli=overrides)
    layout = Layout.from_config(cfg)
    targets = ["site", *(["verify"] if verify_policy.cpu_verification(cfg) else [])]
    print(f"benchmark: LoRA rebuild of {cfg.model.name} {cfg.model.dtype} ({' '.join(targets)}); the site "
          "without LoRA first (not timed)", flush=True)
    doit(*targets, *cli)
    lora_dir = Path(tempfile.mkdtemp(prefix="websd-lora-bench-"))
    lora = make_lora(models.weights_dir(cfg) if models.materialized(cfg) else Path(cfg.model.name), lora_dir, seed=1)

    steps = {}
    for label, value in (("lora at scale 0.8", f"{lora}:0.8"), ("only the scale: 0.4", f"{lora}:0.4"),
                         ("back to no LoRA", "")):
        load_before = os.getloadavg()[0]
        seconds, out = doit(*targets, *cli, f"model.lora={value}")
        ran = executed(out)
        per_task = stats(layout.cache)  # each task's own wall time and peak RSS (pipeline/run_stage.py)
        steps[label] = {"seconds": round(seconds, 1), "tasks_ran": ran,
                        "task_seconds": {t: per_task[t]["seconds"] for t in ran if t in per_task},
                        # the machine is shared: the 1-minute load average says how busy its 2 cores were
                        "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                        "manifest_sha256": sha256(layout.site_dir / "model" / "manifest.json")}
        print(f"  {label}: {seconds:.1f} s, ran {', '.join(ran)}", flush=True)
    result = {
        "model": cfg.model.name, "dtype": cfg.model.dtype, "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores", "commit": commit(), "doit_targets": targets,
        "lora": {"file_sha256": sha256(lora), "bytes": lora.stat().st_size,
                 "made_by": "peft LoraConfig(r=4, init_lora_weights=False) on to_q/to_k/to_v/to_out.0 and "
                            "q_proj/k_proj/v_proj/out_proj, seed 1 (tests/fixtures.py make_lora)"},
        "steps": steps,
    }
    result["targets"] = {"no trace/compile/link task in a LoRA rebuild": not any(
        t.startswith(GRAPH_STAGES) for s in steps.values() for t in s["tasks_ran"])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"lora-rebuild-{Path(cfg.model.name).name}-{cfg.model.dtype}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"### LoRA rebuild: {cfg.model.name} {cfg.model.dtype} ({result['when']}, {result['machine']}, "
             f"commit {result['commit'][:10]})", "",
             f"`doit {' '.join(targets)} model.lora=...`; LoRA sha256 {result['lora']['file_sha256'][:16]}..., "
             f"{result['lora']['bytes']} bytes", "", "| change | wall s | tasks that ran (own wall s) | load average before / after |",
             "|---|---:|---|---|"]
    for label, s in steps.items():
        ran = ", ".join(f"{task} ({s['task_seconds'].get(task, '?')})" for task in s["tasks_ran"])
        lines.append(f"| {label} | {s['seconds']} | {ran} | {s['load_average_1min'][0]} / "
                     f"{s['load_average_1min'][1]} |")
    lines += [""] + [f"- {'met' if ok else 'NOT met'}: {t}" for t, ok in result["targets"].items()]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
