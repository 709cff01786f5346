"""End to end with ``model.lora``: the page of a tiny site built with a LoRA (made in the test with peft) fused at
build time makes the image diffusers' StableDiffusionPipeline makes with the same LoRA fused (``load_lora_weights``,
``set_adapters``, ``fuse_lora``), and not the image of the model without it.

    WEBSD_TVM_MIRROR=<tvm git mirror> .venv/bin/python -m pytest -s tests/e2e/test_page_lora.py

Same site machinery, metric and bar as test_page_vs_diffusers.py (float32, VAE output floats on the 0..255 scale,
PSNR >= 30 dB and max abs diff <= 1.0 of 255). The report is ``<cache>/e2e-lora/report.json``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import real_env, run_doit  # tests/conftest.py (pytest puts tests/ on sys.path)
from pipeline.layout import Layout
from pipeline.page.reference import load_reference_pipeline, max_abs_diff, psnr, reference_image
from tests.e2e.page_driver import drive_page, missing_tools, serving
from tests.e2e.test_page_vs_diffusers import (DTYPE, GUIDANCE, LATENTS_SEED, MAX_ABS_DIFF, MODEL, NEGATIVE, PROMPT,
                                              PSNR_MIN_DB, STEPS)
from tests.fixtures import make_lora

pytestmark = [pytest.mark.tvm_source, pytest.mark.slow]
SCALE = 0.9


def test_page_with_lora_matches_diffusers_with_lora_fused(real_cache):
    import torch

    why = missing_tools()
    if why:
        pytest.skip(why)
    layout = Layout(real_cache, MODEL, DTYPE, "default")
    env = real_env(real_cache, WEBSD_MODEL_NAME=MODEL, WEBSD_MODEL_DTYPE=DTYPE, WEBSD_MODEL_IMAGE_SIZE="0")
    res = run_doit("site", env=env, timeout=3 * 3600)  # the site without LoRA (the other e2e tests' site)
    assert res.returncode == 0, f"`doit site` failed:\n{res.output[-20000:]}"
    out = real_cache / "e2e-lora"
    lora_file = make_lora(layout.model_dir / "diffusers", out / "lora", seed=11)
    res = run_doit("site", f"model.lora={lora_file}:{SCALE}", env=env, timeout=3 * 3600)
    assert res.returncode == 0, f"`doit site` failed:\n{res.output[-20000:]}"
    rebuilt = {t for t in res.executed if t.split("_")[0] in ("trace", "compile", "link", "verify", "shard")}
    # only the weights of the two submodels a LoRA changes: no trace, compile or link, nothing of the VAE
    assert rebuilt == {"shard_clip", "shard_unet"}, res.output[-5000:]
    manifest = json.loads((layout.site_dir / "model" / "manifest.json").read_text())
    assert manifest["lora"] == [{"file": lora_file.name, "scale": SCALE}]

    shape = (1, manifest["latent_channels"], manifest["latent_height"], manifest["latent_width"])
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(LATENTS_SEED)).numpy()
    latents_file = out / "latents.f32"
    latents.astype("<f4").tofile(latents_file)
    run = {"name": "lora", "via": "api", "latentsFile": str(latents_file), "screenshot": str(out / "screenshot.png"),
           "options": {"prompt": PROMPT, "negativePrompt": NEGATIVE, "steps": STEPS, "guidance": GUIDANCE,
                       "scheduler": "dpm++2m", "seed": 0}}
    with serving(layout.site_dir) as url:
        page = drive_page(url, out / "work", [run])
    assert page["loadState"] == "ready", f"the page did not load: {page['error']}\n{page['console']}"
    got = page["runs"][0]
    assert got["error"] is None and got["state"] == "done", f"{got['error']}\n{page['console']}"

    args = {"scheduler": "dpm++2m", "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": STEPS,
            "guidance": GUIDANCE, "width": manifest["width"], "height": manifest["height"],
            "latents": latents}
    tokenizer = layout.tokenizer_dir
    with_lora = reference_image(load_reference_pipeline(layout.model_dir / "diffusers", tokenizer,
                                                        loras=[(lora_file, SCALE)]), **args)
    without = reference_image(load_reference_pipeline(layout.model_dir / "diffusers", tokenizer), **args)
    report = {"model": MODEL, "dtype": DTYPE, "lora": manifest["lora"], "steps": STEPS,
              "thresholds": {"psnr_db_min": PSNR_MIN_DB, "max_abs_diff_max": MAX_ABS_DIFF},
              "psnr_db": psnr(got["pixels"], with_lora), "max_abs_diff": max_abs_diff(got["pixels"], with_lora),
              "without_lora": {"psnr_db": psnr(got["pixels"], without),
                               "max_abs_diff": max_abs_diff(got["pixels"], without)},
              "generate_s": got["ms"] / 1000}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nLoRA e2e: {report}")
    assert report["psnr_db"] >= PSNR_MIN_DB and report["max_abs_diff"] <= MAX_ABS_DIFF, report
    # the bar tells the fused LoRA apart: the base model's image misses it
    assert report["without_lora"]["max_abs_diff"] > MAX_ABS_DIFF, report
    assert np.isfinite(got["pixels"]).all()
