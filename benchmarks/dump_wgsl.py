"""Dump the WebGPU code a tree generates: per submodel, the WGSL of its WebGPU build, the lowered Relax/TIR
module and what compile records of it (limits, kernel costs, launch grids, buffers), with their sha256, so two trees (a refactor and its base) can be compared byte for byte.

    .venv/bin/python benchmarks/dump_wgsl.py --out DIR [--subs clip,unet,vae] [section.key=value ...]

The config is the tree's own (``paths.cache`` etc. as ``section.key=value``); the traces must exist
(``doit trace``). Each submodel is built in-process with the compile stage's own functions, nothing is written to
the cache. Writes ``DIR/<sub>.wgsl``, ``DIR/<sub>.lowered.py``, ``DIR/<sub>.facts.json`` and ``DIR/sha256.json``, and prints one line per
submodel.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.fsutil import atomic_write, write_json  # noqa: E402


def _compiler() -> dict:
    """This tree's WebGPU compiler entry points, by what they do (at 2bbbb6b they were in pipeline.compile and
    pipeline.tvm_api: a copy of this script made for that tree names those)."""
    from pipeline.model import compile as stage
    from pipeline.webgpu import build, inspection

    return {"import": stage.import_relax, "build": build.build, "wgsl": inspection.webgpu_source,
            "kernel_costs": inspection.kernel_costs, "launch_grids": inspection.launch_grids,
            "buffers": inspection.buffer_sizes}


def dump(cfg, sub: str, out: Path) -> dict:
    c = _compiler()
    mod, info = c["import"](cfg, sub)
    lowered, executable, use = c["build"](mod, sub, cfg.webgpu.limits, [p["name"] for p in info["params"]],
                                          cfg.webgpu.matmul)
    facts = {"required_limits": use.required(), "kernel_costs": c["kernel_costs"](lowered),
             "launch_grids": c["launch_grids"](lowered), "buffers": c["buffers"](lowered),
             "bound_buffers": use.buffers}
    texts = {"wgsl": c["wgsl"](executable), "lowered.py": lowered.script(),
             "facts.json": json.dumps(facts, indent=1, sort_keys=True, default=list)}
    digests = {}
    for suffix, text in texts.items():
        with atomic_write(out / f"{sub}.{suffix}") as f:
            f.write(text)
        digests[suffix] = hashlib.sha256(text.encode()).hexdigest()
    return digests


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--subs", default="clip,unet,vae")
    ap.add_argument("settings", nargs="*", help="config as section.key=value")
    args = ap.parse_args(argv)
    cli = dict(s.split("=", 1) for s in args.settings)
    cfg = load_config(cli=cli)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"config": cli, "submodels": {}}
    for sub in args.subs.split(","):
        result["submodels"][sub] = dump(cfg, sub, args.out)
        print(f"{sub}: " + "  ".join(f"{k} {v}" for k, v in result["submodels"][sub].items()), flush=True)
    write_json(args.out / "sha256.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
