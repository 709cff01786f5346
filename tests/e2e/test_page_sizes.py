"""End to end at a non-square size: a tiny site built with ``model.width=64 model.height=48`` makes, in headless
Chromium, the 64 x 48 image diffusers' StableDiffusionPipeline makes (``width=64, height=48``) from the same weights,
prompt and initial latents (1 x 4 x 6 x 8), under the bar of test_page_vs_diffusers.py; and so does a site whose VAE
decodes 2 x 3 tiles of 32 px (``model.vae_tile=32``) against diffusers with ``enable_tiling()`` and the same tile.

    WEBSD_TVM_MIRROR=<tvm git mirror> .venv/bin/python -m pytest -s tests/e2e/test_page_sizes.py

The reports are ``<cache>/e2e-64x48[-tile32]/report.json``.
"""
from __future__ import annotations

import json

import pytest

from conftest import real_env, run_doit  # tests/conftest.py (pytest puts tests/ on sys.path)
from pipeline.config import load_config
from pipeline.layout import Layout
from pipeline.page.reference import load_reference_pipeline, max_abs_diff, psnr, reference_image
from tests.e2e.page_driver import drive_page, missing_tools, serving
from tests.e2e.test_page_vs_diffusers import (DTYPE, GUIDANCE, LATENTS_SEED, MAX_ABS_DIFF, MODEL, NEGATIVE, PROMPT,
                                              PSNR_MIN_DB, STEPS)

pytestmark = [pytest.mark.tvm_source, pytest.mark.slow]
WIDTH, HEIGHT = 64, 48


@pytest.mark.parametrize("tile", [0, 32])
def test_page_at_a_non_square_size_matches_diffusers(real_cache, tile):
    import torch

    why = missing_tools()
    if why:
        pytest.skip(why)
    sizes = {"model.width": str(WIDTH), "model.height": str(HEIGHT), "model.vae_tile": str(tile)}
    layout = Layout.from_config(load_config(pyproject=None, user_config=real_cache / "none.toml", env={},
                                            cli={"paths.cache": str(real_cache), "model.name": MODEL,
                                                 "model.dtype": DTYPE, **sizes}))
    assert layout.size == f"{WIDTH}x{HEIGHT}"
    env = real_env(real_cache, WEBSD_MODEL_NAME=MODEL, WEBSD_MODEL_DTYPE=DTYPE, WEBSD_MODEL_IMAGE_SIZE="0")
    res = run_doit("site", *(f"{k}={v}" for k, v in sizes.items()), env=env, timeout=3 * 3600)
    assert res.returncode == 0, f"`doit site` failed:\n{res.output[-20000:]}"
    manifest = json.loads((layout.site_dir / "model" / "manifest.json").read_text())
    assert (manifest["width"], manifest["height"], manifest["latent_width"], manifest["latent_height"]) == \
        (WIDTH, HEIGHT, WIDTH // 8, HEIGHT // 8)
    assert manifest["vae_tile"] == (tile or None)

    out = real_cache / f"e2e-{WIDTH}x{HEIGHT}{f'-tile{tile}' if tile else ''}"
    out.mkdir(parents=True, exist_ok=True)
    shape = (1, manifest["latent_channels"], manifest["latent_height"], manifest["latent_width"])
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(LATENTS_SEED)).numpy()
    latents.astype("<f4").tofile(out / "latents.f32")
    run = {"name": "wide", "via": "api", "latentsFile": str(out / "latents.f32"),
           "screenshot": str(out / "screenshot.png"),
           "options": {"prompt": PROMPT, "negativePrompt": NEGATIVE, "steps": STEPS, "guidance": GUIDANCE,
                       "scheduler": "dpm++2m", "seed": 0}}
    with serving(layout.site_dir) as url:
        page = drive_page(url, out / "work", [run])
    assert page["loadState"] == "ready", f"the page did not load: {page['error']}\n{page['console']}"
    got = page["runs"][0]
    assert got["error"] is None and got["state"] == "done", f"{got['error']}\n{page['console']}"
    assert got["pixels"].shape == (HEIGHT, WIDTH, 3)

    ref = reference_image(load_reference_pipeline(layout.model_dir / "diffusers", layout.tokenizer_dir,
                                                  vae_tile=manifest["vae_tile"]),
                          scheduler="dpm++2m", prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS,
                          guidance=GUIDANCE, width=WIDTH, height=HEIGHT, latents=latents)
    report = {"model": MODEL, "dtype": DTYPE, "width": WIDTH, "height": HEIGHT, "vae_tile": tile, "steps": STEPS,
              "thresholds": {"psnr_db_min": PSNR_MIN_DB, "max_abs_diff_max": MAX_ABS_DIFF},
              "psnr_db": psnr(got["pixels"], ref), "max_abs_diff": max_abs_diff(got["pixels"], ref),
              "generate_s": got["ms"] / 1000}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\n{WIDTH}x{HEIGHT} e2e: {report}")
    assert report["psnr_db"] >= PSNR_MIN_DB and report["max_abs_diff"] <= MAX_ABS_DIFF, report
