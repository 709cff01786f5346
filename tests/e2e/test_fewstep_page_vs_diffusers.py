"""End to end for the few-step models without classifier-free guidance, each built by the real ``doit site`` and run
in headless Chromium against diffusers:
  - the tiny SD-Turbo (``tiny-turbo``: SD 2.x layout, batch-1 UNet, trailing-spaced Euler ancestral) against
    StableDiffusionPipeline with guidance_scale 0 (its no-guidance path: the prompt alone, batch 1);
  - the tiny LCM (``tiny-lcm``: SD 1.x layout, a UNet that embeds the guidance scale, the LCM scheduler) against
    LatentConsistencyModelPipeline.

Same bar and metric as tests/e2e/test_page_vs_diffusers.py (PSNR >= 30 dB and max abs diff <= 1 of 255 on the VAE
output floats; a form run on canvas bytes vs the reference rounded). The runs:
  - through window.websd.generate with injected initial latents and a seed for the noise the scheduler adds between
    steps (diffusers: latents= and generator=manual_seed(seed)): SD-Turbo 1 step (its default) and 4 steps, LCM 4;
  - the form with only prompt and seed typed in: steps, guidance and scheduler are the page's defaults, which must
    be the model's (manifest.json ``defaults``: SD-Turbo 1 step, no guidance, Euler ancestral; LCM 4 steps,
    guidance 8, LCM).
Each run is also compared with references made with one input wrong (prompt, steps, noise seed, guidance, scheduler
where they change the image), which the bar must reject.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import real_env, run_doit  # tests/conftest.py (pytest puts tests/ on sys.path)
from pipeline.layout import Layout
from pipeline.page.reference import load_reference_pipeline, max_abs_diff, psnr, reference_image
from tests.e2e.page_driver import drive_page, missing_tools, serving

pytestmark = [pytest.mark.tvm_source, pytest.mark.slow]

DTYPE = "float32"
PROMPT = "a photo of an astronaut riding a horse"
LATENTS_SEED = 7
PAGE_SEED = 1234
PSNR_MIN_DB, MAX_ABS_DIFF = 30.0, 1.0

# model -> run name -> (options given to the page, initial noise, how the page is driven). The form run comes
# first: the driver types every run's options into the controls, so a later form run would inherit them.
MODELS = {
    "tiny-turbo": {
        "defaults-seed-form": ({}, "seed", "form"),
        "1-step": ({"steps": 1, "scheduler": "euler-a"}, "latents", "api"),
        "4-steps": ({"steps": 4, "scheduler": "euler-a"}, "latents", "api"),
    },
    "tiny-lcm": {
        "defaults-seed-form": ({}, "seed", "form"),
        "4-steps": ({"steps": 4, "guidance": 8.0, "scheduler": "lcm"}, "latents", "api"),
    },
}


@pytest.fixture(scope="module")
def e2e(request):
    """One page load of ``request.param``'s site making every run of MODELS[model], and the references."""
    model = request.param
    model_runs = MODELS[model]
    real_cache = request.getfixturevalue("real_cache")
    why = missing_tools()
    if why:
        pytest.skip(why)
    import torch

    res = run_doit("site", env=real_env(real_cache, WEBSD_MODEL_NAME=model, WEBSD_MODEL_DTYPE=DTYPE,
                                        WEBSD_MODEL_IMAGE_SIZE="0"), timeout=3 * 3600)
    assert res.returncode == 0, f"`doit site` failed:\n{res.output[-20000:]}"
    layout = Layout(real_cache, model, DTYPE, "default")
    m = json.loads((layout.site_dir / "model" / "manifest.json").read_text())
    assert (m["model"], m["classifier_free"], m["guidance_embedding"]) == (model, False, model == "tiny-lcm")
    defaults = m["defaults"]
    out = real_cache / f"e2e-{model}"
    out.mkdir(parents=True, exist_ok=True)
    shape = (1, m["latent_channels"], m["latent_height"], m["latent_width"])
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(LATENTS_SEED)).numpy()
    latents_file = out / "latents.f32"
    latents.astype("<f4").tofile(latents_file)

    runs = []
    for name, (options, noise, via) in model_runs.items():
        run = {"name": name, "via": via, "options": {"prompt": PROMPT, "seed": PAGE_SEED, **options},
               "screenshot": str(out / f"screenshot-{name}.png")}
        if noise == "latents":
            run["latentsFile"] = str(latents_file)
        runs.append(run)
    with serving(layout.site_dir) as url:
        page = drive_page(url, out / "work", runs)
    assert page["loadState"] == "ready", f"the page did not load: {page['error']}\n{page['console']}"

    pipe = load_reference_pipeline(layout.model_dir / "diffusers", layout.model_dir / "tokenizer")
    results = {}
    for run in page["runs"]:
        options, noise, via = model_runs[run["name"]]
        assert run["error"] is None and run["state"] == "done", f"{run['name']}: {run['error']}\n{page['console']}"
        args = {"prompt": PROMPT, "negative_prompt": "", "width": m["width"], "height": m["height"],
                "seed": PAGE_SEED,
                "steps": options.get("steps", defaults["steps"]), "guidance": options.get("guidance", defaults["guidance"]),
                "scheduler": options.get("scheduler", defaults["scheduler"]),
                "latents": latents if noise == "latents" else None}

        def reference(**changes):
            image = reference_image(pipe, **{**args, **changes})
            return np.clip(np.rint(image), 0, 255) if via == "form" else image

        page_img = run["pixels"] if via == "api" else run["rgba"][..., :3].astype(np.float32)
        ref = reference()
        wrong = {"prompt": reference(prompt="a red cube on a table"), "steps": reference(steps=args["steps"] + 1)}
        if args["steps"] > 1:  # one step adds no noise (it ends at sigma 0), and Euler's step is the same
            wrong["noise_seed"] = reference(seed=PAGE_SEED + 1)
            if args["scheduler"] == "euler-a":
                wrong["scheduler"] = reference(scheduler="euler")
        if m["guidance_embedding"]:
            wrong["guidance"] = reference(guidance=args["guidance"] - 1.5)
        results[run["name"]] = {
            "options": {k: v for k, v in args.items() if k != "latents"}, "noise": noise, "via": via,
            "psnr_db": psnr(page_img, ref), "max_abs_diff": max_abs_diff(page_img, ref),
            "generate_s": run["ms"] / 1000, "screenshot": run["screenshot"],
            "wrong_input_max_abs_diff": {k: max_abs_diff(page_img, v) for k, v in wrong.items()},
        }
    report = {"model": model, "dtype": DTYPE, "width": m["width"], "height": m["height"], "defaults": defaults,
              "thresholds": {"psnr_db_min": PSNR_MIN_DB, "max_abs_diff_max": MAX_ABS_DIFF},
              "browser": {"load_s": page["loadMs"] / 1000, "total_s": page["browserMs"] / 1000},
              "runs": {k: {**v, "psnr_db": "inf" if v["psnr_db"] == float("inf") else v["psnr_db"]}
                       for k, v in results.items()}}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ne2e report: {out / 'report.json'}")
    for name, r in results.items():
        print(f"  {name}: PSNR {r['psnr_db']:.1f} dB, max abs diff {r['max_abs_diff']:.4f} / 255, "
              f"generate {r['generate_s']:.1f} s; wrong inputs: {r['wrong_input_max_abs_diff']}")
    return {"model": model, "runs": results}


@pytest.mark.parametrize("e2e", list(MODELS), indirect=True)
def test_fewstep_page_images_match_diffusers_and_the_bar_rejects_wrong_inputs(e2e):
    """Every run of the model (one test per model: one page load for all its runs; pytest would make one page load
    per case of a per-run parametrization, as each case is its own fixture parameter)."""
    failures = {}
    for name, r in e2e["runs"].items():
        # passing the bar must mean something: the reference made with one wrong input fails it
        passing = {k: d for k, d in r["wrong_input_max_abs_diff"].items() if d <= MAX_ABS_DIFF}
        if r["psnr_db"] < PSNR_MIN_DB or r["max_abs_diff"] > MAX_ABS_DIFF or passing:
            failures[name] = {"psnr_db": r["psnr_db"], "max_abs_diff": r["max_abs_diff"],
                              "wrong_inputs_passing_the_bar": passing}
    assert not failures, failures
