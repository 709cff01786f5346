"""Benchmark: the page's kernel launch path (web/src/launch.js, "replay") against tvmjs' own ("plain") on one site.

Runs the headless runner (web/runner/run.mjs) twice on the same site, prompt, latents and GPU, once per launch
path, and reports per submodel what one warm call asks of WebGPU (dispatches, bind groups created, compute passes,
submits, buffer writes, readbacks), what the replay launcher did (launches replayed, bind groups it created,
scalar slots it wrote, a fallback) and the warm call times; and whether the two paths' outputs are bit-identical
(every submodel's first call and the final pixels). Writes benchmarks/results/launch-<model>-<dtype>-<adapter>.json
and .md with the commit and the sha256 of the wasm files and tvmjs bundle it measured. Exit status 1 when the
outputs differ or a run fails.

  .venv/bin/python benchmarks/bench_launch.py --site cache/site [--steps 20] [--warm 3]
  (on this machine: VK_ICD_FILENAMES=.venv/lavapipe/lvp_icd.json; on a GPU machine Dawn finds the GPU)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_container import git_head  # noqa: E402
from bench_webgpu import run_runner  # noqa: E402
from pipeline.fsutil import sha256_file, write_json  # noqa: E402

MODES = ("plain", "replay")
SUBMODELS = ("clip", "unet", "vae")
OPS = ("dispatches", "bind_groups", "passes", "submits", "writes", "reads")


def identical_outputs(a: Path, b: Path) -> dict[str, bool]:
    """Each submodel's first-call output and the final pixels: byte for byte."""
    files = [f"io/{sub}.out.bin" for sub in SUBMODELS] + ["pixels.f32"]
    return {f: (a / f).read_bytes() == (b / f).read_bytes() for f in files}


def markdown(report: dict) -> str:
    runs = report["runs"]
    lines = [f"# Kernel launch paths: {report['model']} {report['dtype']} on {report['adapter']}", "",
             f"{report['date']}, commit {report['commit'][:12]}{' (dirty)' if report['dirty'] else ''}, "
             f"{report['steps']} steps, warm medians of the runner's calls. Per warm call, as counted by the runner "
             "(web/runner/profile.js installCallCounter):", "",
             "| submodel | launch | " + " | ".join(OPS) + " | warm ms |", "|---|---|" + "---:|" * (len(OPS) + 1)]
    for sub in SUBMODELS:
        for mode in MODES:
            call = runs[mode]["calls"][sub]
            ops = call["webgpu_ops_per_call"]
            lines.append(f"| {sub} | {mode} | " + " | ".join(str(ops.get(k, "?")) for k in OPS)
                         + f" | {call['warm_median_ms']} |")
    lines += ["", "The replay launcher per warm call (launches, bind groups it created, scalar slots it wrote, "
              "fallback):", ""]
    for sub in SUBMODELS:
        lp = runs["replay"]["calls"][sub].get("launch_per_call") or {}
        lines.append(f"- {sub}: {lp.get('launches')} launches, {lp.get('bindGroupsCreated')} bind groups created, "
                     f"{lp.get('slotsWritten')} scalar slots written, {lp.get('passes')} passes; live "
                     f"{lp.get('liveBindGroups')} bind groups, {lp.get('scalarSlots')} slots; fallback: "
                     f"{lp.get('fallback')}")
    same = all(report["identical"].values())
    lines += ["", f"Outputs of the two paths (first call of each submodel, final pixels): "
              f"{'bit-identical' if same else 'DIFFERENT: ' + str(report['identical'])}.", "",
              "The counts are the figures here; times on a software adapter (lavapipe) on a shared machine are not "
              "speed figures. Bind groups created per warm call fall as calls repeat (buffers the VM hands a kernel "
              "differ between the first calls); the unet (called 20 times in 20 steps) settles at those that bind "
              "the call's new input tensors.", "",
              "Measured: " + ", ".join(f"{k} sha256 {v[:16]}" for k, v in report["sha256"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", type=Path, required=True, help="a site directory doit built")
    ap.add_argument("--node", default=shutil.which("node") or "node")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--dawn-feature", action="append", default=[])
    ap.add_argument("--work", type=Path, default=ROOT / "cache" / "bench-launch")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--runner-timeout", type=int, default=1800)
    args = ap.parse_args(argv)
    site = args.site.resolve()
    manifest = json.loads((site / "model" / "manifest.json").read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    latents = args.work / "latents.f32"
    shape = (1, manifest["latent_channels"], manifest["latent_height"], manifest["latent_width"])
    np.random.default_rng(7).standard_normal(shape).astype("<f4").tofile(latents)
    commit, dirty = git_head()  # what is measured: the tree as the runs start
    runs = {}
    for mode in MODES:
        opts = Namespace(steps=args.steps, images=1, warm=args.warm, dawn_feature=args.dawn_feature, profile=False,
                         serial_load=False, launch=mode, runner_timeout=args.runner_timeout)
        runs[mode] = run_runner(args.node, site, args.work / mode, latents, opts)
        if "error" in runs[mode]:
            print(f"bench_launch: the {mode} run failed: {runs[mode]['error']}", file=sys.stderr)
            return 1
    adapter = runs["replay"]["adapter"]
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit, "dirty": dirty, "model": manifest["model"],
              "dtype": manifest["dtype"], "width": manifest["width"], "height": manifest["height"], "steps": args.steps,
              "adapter": f"{adapter['vendor']} {adapter['architecture']} {adapter['description'] or adapter['device']}",
              "sha256": {**{f"{sub}.wasm": sha256_file(site / "model" / manifest["submodels"][sub]["wasm"])
                            for sub in SUBMODELS}, "tvmjs.bundle.js": sha256_file(site / "tvmjs.bundle.js")},
              "identical": identical_outputs(args.work / "plain", args.work / "replay"), "runs": runs}
    arch = "lavapipe" if adapter["architecture"] == "software" else (adapter["vendor"] or "gpu")
    stem = f"launch-{manifest['model']}-{manifest['dtype']}-{arch}"
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"{stem}.json", report)
    (args.results / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.results / stem}.json and .md")
    return 0 if all(report["identical"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
