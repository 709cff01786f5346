"""``doit gpu_run``: the built site in the headless GPU runner (web/runner/run.mjs: the page's own modules in
Node, WebGPU from Dawn) on this machine's GPU; results in ``<cache>/gpu-run/<model>-<dtype>/``.

Dawn uses the Vulkan drivers the system has. Without a GPU, point ``VK_ICD_FILENAMES`` at the lavapipe driver
./setup.sh unpacks (``.venv/lavapipe/lvp_icd.json``). For timings against PyTorch and the image checked against
diffusers, use benchmarks/bench_webgpu.py.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..config import PROJECT_ROOT
from ..errors import WebsdError

RUNNER = PROJECT_ROOT / "web" / "runner" / "run.mjs"


def run_site(site_dir: Path, out_dir: Path, steps: int = 20, images: int = 2, dawn_features: tuple = ()) -> Path:
    node = shutil.which("node")
    if node is None:
        raise WebsdError("node is not installed; the GPU runner needs Node >= 20 (./setup.sh installs it)")
    if not (PROJECT_ROOT / "web" / "node_modules" / "webgpu").is_dir():
        raise WebsdError("web/node_modules/webgpu is missing; run ./setup.sh (npm install in web/)")
    cmd = [node, str(RUNNER), "--site", str(site_dir), "--out", str(out_dir), "--steps", str(steps),
           "--images", str(images)]
    for feature in dawn_features:
        cmd += ["--dawn-feature", feature]
    if subprocess.run(cmd, cwd=PROJECT_ROOT).returncode != 0:
        raise WebsdError("the GPU runner failed (its last line above says why)")
    return out_dir


def run(cfg) -> Path:
    """``doit gpu_run``: results in ``<cache>/gpu-run/<model>-<dtype>/``."""
    from ..layout import Layout

    layout = Layout.from_config(cfg)
    return run_site(layout.site_dir, layout.cache / "gpu-run" / f"{Path(cfg.model.name).name}-{cfg.model.dtype}")
