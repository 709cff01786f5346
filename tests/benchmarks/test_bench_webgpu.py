"""benchmarks/bench_webgpu.py's per-model settings: each site runs and is checked with its model's own steps,
guidance and scheduler (manifest.json ``defaults``), and the wrong-input references are the ones that change that
model's image. (The whole benchmark runs on lavapipe in tests/web/test_gpu_runner.py.)"""
from __future__ import annotations

import argparse
import sys

from conftest import ROOT  # tests/conftest.py

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_webgpu  # noqa: E402

NO_OVERRIDES = argparse.Namespace(steps=None, guidance=None, scheduler=None)
SD15 = {"model": "sd15-random", "defaults": {"steps": 20, "guidance": 7.5, "scheduler": "dpm++2m"},
        "classifier_free": True, "guidance_embedding": False}
TURBO = {"model": "sd-turbo-random", "defaults": {"steps": 1, "guidance": 0.0, "scheduler": "euler-a"},
         "classifier_free": False, "guidance_embedding": False}
LCM = {"model": "lcm-random", "defaults": {"steps": 4, "guidance": 8.0, "scheduler": "lcm"},
       "classifier_free": False, "guidance_embedding": True}


def test_settings_are_the_models_own_unless_given():
    assert bench_webgpu.site_settings(TURBO, NO_OVERRIDES) == {
        "steps": 1, "guidance": 0.0, "scheduler": "euler-a", "classifier_free": False, "guidance_embedding": False}
    given = bench_webgpu.site_settings(TURBO, argparse.Namespace(steps=4, guidance=0.0, scheduler="euler"))
    assert (given["steps"], given["guidance"], given["scheduler"]) == (4, 0.0, "euler")
    # a manifest from before the families had no defaults: SD v1.5's
    old = bench_webgpu.site_settings({"model": "sd15-random"}, NO_OVERRIDES)
    assert (old["steps"], old["guidance"], old["scheduler"], old["classifier_free"]) == (20, 7.5, "dpm++2m", True)


def test_wrong_inputs_are_those_that_change_the_models_image():
    sd15 = bench_webgpu.wrong_inputs(bench_webgpu.site_settings(SD15, NO_OVERRIDES))
    assert sd15 == {"prompt": {"prompt": "a red cube on a table"}, "negative_prompt": {"negative_prompt": ""},
                    "guidance": {"guidance": 6.0}, "scheduler": {"scheduler": "euler"}}
    # one Euler a step ends at sigma 0: no noise, and Euler's step; without guidance the negative prompt is unused
    turbo = bench_webgpu.wrong_inputs(bench_webgpu.site_settings(TURBO, NO_OVERRIDES))
    assert set(turbo) == {"prompt", "steps"} and turbo["steps"] == {"steps": 2}
    turbo4 = bench_webgpu.wrong_inputs(bench_webgpu.site_settings(TURBO, argparse.Namespace(
        steps=4, guidance=None, scheduler=None)))
    assert set(turbo4) == {"prompt", "scheduler", "noise_seed"}
    lcm = bench_webgpu.wrong_inputs(bench_webgpu.site_settings(LCM, NO_OVERRIDES))
    assert set(lcm) == {"prompt", "guidance", "scheduler", "noise_seed"} and lcm["guidance"] == {"guidance": 6.5}


def test_report_names_say_the_size_only_when_it_is_not_the_models_own():
    own = {"model": "sd15-random", "width": 512, "height": 512, "model_size": (512, 512)}
    assert bench_webgpu.report_stem(own, "cuda", "NVIDIA H200", "replay") == "webgpu-sd15-random-h200"
    tall = {**own, "height": 768}
    assert bench_webgpu.report_stem(tall, "cuda", "NVIDIA H200", "plain") == \
        "webgpu-sd15-random-512x768-h200-plain-launch"
    assert bench_webgpu.report_stem({**own, "model": "tiny", "width": 64, "height": 64, "model_size": (64, 64)},
                                    "cpu", "CPU", "replay") == "webgpu-tiny-cpu"
    assert bench_webgpu.model_size("sd21-random") == (768, 768)


def test_a_site_whose_variants_need_an_experimental_feature_runs_with_dawns_unsafe_apis_toggle():
    args = argparse.Namespace(dawn_feature=["vulkan_enable_f16_on_nvidia"])
    sm = {"variants": [{"name": "subgroup-matrix", "requires": {
        "features": ["chromium-experimental-subgroup-matrix", "shader-f16"]}, "submodels": {}}]}
    assert bench_webgpu.dawn_features(sm, args) == ["vulkan_enable_f16_on_nvidia", "allow_unsafe_apis"]
    assert bench_webgpu.dawn_features({}, args) == ["vulkan_enable_f16_on_nvidia"]
    given = argparse.Namespace(dawn_feature=["allow_unsafe_apis"])
    assert bench_webgpu.dawn_features(sm, given) == ["allow_unsafe_apis"]
    # a row of --variants all says its build in its label; an auto row says which build ran
    row = {"label": "sd15:subgroup-matrix", "dtype": "float16", "limits_profile": "default",
           "runner": {"variant": "subgroup-matrix"}}
    assert bench_webgpu._name(row) == "sd15:subgroup-matrix: float16 (default)"
    assert bench_webgpu._name({**row, "label": "sd15"}) == "sd15 [subgroup-matrix kernels]: float16 (default)"
    assert bench_webgpu._name({**row, "label": "sd15", "runner": {"variant": "default"}}) == "sd15: float16 (default)"
