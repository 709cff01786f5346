"""`doit publish` end to end: the built tiny site is published to a real S3 server (SeaweedFS on 127.0.0.1,
tests/s3_server.py) and headless Chromium loads the page from the bucket's anonymous HTTP endpoint - no other web
server - and generates an image, compared with diffusers like tests/e2e/test_page_vs_diffusers.py does.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pipeline.page import publish
from pipeline.page.reference import load_reference_pipeline, psnr, reference_image
from tests.e2e.page_driver import drive_page
from tests.e2e.test_page_vs_diffusers import (GUIDANCE, LATENTS_SEED, NEGATIVE, PROMPT, PSNR_MIN_DB,  # noqa: F401
                                              built_site)

pytestmark = [pytest.mark.tvm_source, pytest.mark.slow]
STEPS = 4


def test_published_site_loads_and_generates_from_the_bucket(built_site, s3_server, monkeypatch, tmp_path):  # noqa: F811
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    stats = publish.publish_site(built_site.site, "s3://site/websd")
    files = [p for p in built_site.site.resolve().rglob("*") if p.is_file()]
    assert stats["uploaded"] == len(files)
    status, headers, _ = s3_server.http_get("site", "websd/model/unet.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm"

    m = built_site.manifest
    shape = (1, m["latent_channels"], m["latent_height"], m["latent_width"])
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(LATENTS_SEED)).numpy()
    latents_file = tmp_path / "latents.f32"
    latents.astype("<f4").tofile(latents_file)
    run = {"name": "published", "via": "api", "latentsFile": str(latents_file),
           "options": {"prompt": PROMPT, "negativePrompt": NEGATIVE, "steps": STEPS, "guidance": GUIDANCE,
                       "scheduler": "dpm++2m", "seed": 1}}
    url = s3_server.public_url("site", "websd/index.html")
    page = drive_page(url, tmp_path / "work", [run], screenshot=tmp_path / "published.png")
    assert page["loadState"] == "ready", f"the page did not load from {url}: {page['error']}\n{page['console']}"
    got = page["runs"][0]
    assert got["error"] is None and got["state"] == "done", f"{got['error']}\n{page['console']}"
    pipe = load_reference_pipeline(built_site.model_dir, built_site.tokenizer_dir)
    ref = reference_image(pipe, prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=GUIDANCE,
                          width=m["width"], height=m["height"], scheduler="dpm++2m", latents=latents)
    assert psnr(got["pixels"], ref) >= PSNR_MIN_DB
    assert float(np.std(got["pixels"])) > 1.0  # an image, not a blank
    print(f"\npublished page: {url}, PSNR {psnr(got['pixels'], ref):.1f} dB vs diffusers, "
          f"load {page['loadMs'] / 1000:.1f} s ({os.path.basename(str(built_site.site))})")
