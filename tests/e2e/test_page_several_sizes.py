"""End to end with several sizes in one site: the tiny model built with ``model.sizes=64,64x48`` (one unet and vae
build per size, one set of weight shards), in headless Chromium. One page load generates at the default 64 x 64,
then at 64 x 48: each image matches diffusers' at that size from the same weights, prompt and initial latents, under
the bar of test_page_vs_diffusers.py, and the switch fetches that size's two .wasm files and no weights (the server
counts the requests; the weights come from the page's weight cache).

    WEBSD_TVM_MIRROR=<tvm git mirror> .venv/bin/python -m pytest -s tests/e2e/test_page_several_sizes.py

The report is ``<cache>/e2e-sizes/report.json``.
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
SIZES = "64,64x48"


def test_one_site_generates_at_each_size_and_a_switch_downloads_no_weights(real_cache):
    import torch

    why = missing_tools()
    if why:
        pytest.skip(why)
    cli = {"model.sizes": SIZES}
    layout = Layout.from_config(load_config(pyproject=None, user_config=real_cache / "none.toml", env={},
                                            cli={"paths.cache": str(real_cache), "model.name": MODEL,
                                                 "model.dtype": DTYPE, **cli}))
    env = real_env(real_cache, WEBSD_MODEL_NAME=MODEL, WEBSD_MODEL_DTYPE=DTYPE, WEBSD_MODEL_IMAGE_SIZE="0")
    res = run_doit("site", *(f"{k}={v}" for k, v in cli.items()), env=env, timeout=3 * 3600)
    assert res.returncode == 0, f"`doit site` failed:\n{res.output[-20000:]}"
    manifest = json.loads((layout.site_dir / "model" / "manifest.json").read_text())
    sizes = {s["name"]: s for s in manifest["sizes"]}
    assert list(sizes) == ["64x64", "64x48"] and manifest["default_size"] == "64x64"
    shards = [p for p in manifest["files"] if p.endswith(".bin")]
    assert shards and not [p for p in shards if not p.startswith("params/")]  # one set of weights
    for size in sizes.values():
        assert all(manifest["files"][p]["sha256"] == size["sha256"][sub] for sub, p in size["wasm"].items())

    out = real_cache / "e2e-sizes"
    out.mkdir(parents=True, exist_ok=True)
    runs, latents = [], {}
    for name, size in sizes.items():
        shape = (1, manifest["latent_channels"], size["latent_height"], size["latent_width"])
        latents[name] = torch.randn(shape, generator=torch.Generator().manual_seed(LATENTS_SEED)).numpy()
        latents[name].astype("<f4").tofile(out / f"latents-{name}.f32")
        runs.append({"name": name, "via": "api", "latentsFile": str(out / f"latents-{name}.f32"),
                     "screenshot": str(out / f"screenshot-{name}.png"),
                     "options": {"prompt": PROMPT, "negativePrompt": NEGATIVE, "steps": STEPS, "guidance": GUIDANCE,
                                 "scheduler": "dpm++2m", "seed": 0, "size": name}})
    with serving(layout.site_dir, record=True) as url:
        page = drive_page(url, out / "work", runs, count_requests=True)
    assert page["loadState"] == "ready", f"the page did not load: {page['error']}\n{page['console']}"

    report = {"model": MODEL, "dtype": DTYPE, "sizes": SIZES, "steps": STEPS,
              "thresholds": {"psnr_db_min": PSNR_MIN_DB, "max_abs_diff_max": MAX_ABS_DIFF}, "runs": {}}
    for got in page["runs"]:
        size = sizes[got["name"]]
        assert got["error"] is None and got["state"] == "done", f"{got['error']}\n{page['console']}"
        assert got["pixels"].shape == (size["height"], size["width"], 3)
        # the reference decodes with the tiling that size's VAE was built with (None: untiled)
        pipe = load_reference_pipeline(layout.model_dir / "diffusers", layout.tokenizer_dir, vae_tile=size["vae_tile"])
        ref = reference_image(pipe, scheduler="dpm++2m", prompt=PROMPT, negative_prompt=NEGATIVE, steps=STEPS,
                              guidance=GUIDANCE, width=size["width"], height=size["height"],
                              latents=latents[got["name"]])
        report["runs"][got["name"]] = {"psnr_db": psnr(got["pixels"], ref), "max_abs_diff": max_abs_diff(
            got["pixels"], ref), "generate_s": got["ms"] / 1000, "requests": got["requests"]}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nsizes e2e: {json.dumps(report['runs'], default=str)}")
    for name, r in report["runs"].items():
        assert r["psnr_db"] >= PSNR_MIN_DB and r["max_abs_diff"] <= MAX_ABS_DIFF, (name, r)
    # the default size was loaded with the page; the switch loads the other size's .wasm files and no weights
    assert report["runs"]["64x64"]["requests"] == []
    assert sorted(report["runs"]["64x48"]["requests"]) == \
        sorted(f"model/{p}" for sub, p in sizes["64x48"]["wasm"].items() if sub != "clip")
    assert not [p for p in report["runs"]["64x48"]["requests"] if "/params/" in p]
