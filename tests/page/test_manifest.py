"""pipeline.page.manifest: the model's part of manifest.json, strict JSON, sizes and the WebGPU limits it needs."""
from __future__ import annotations

import json

import pytest

from pipeline.page import manifest
from pipeline.layout import Layout
from tests.model_build import tiny_f32  # noqa: F401 - fixture


@pytest.mark.slow
def test_model_manifest_matches_the_contract(tiny_f32):  # noqa: F811
    found = manifest.model_manifest(tiny_f32)
    text = json.dumps(found, allow_nan=False)  # strict JSON for the browser
    assert json.loads(text)["submodels"]["unet"] == {"wasm": "unet.wasm", "params": "params/unet/",
                                                      "function": "unet"}
    assert {k: found[k] for k in ("model", "dtype", "width", "height", "latent_width", "latent_height",
                                  "latent_channels", "text_hidden", "max_length", "requires_f16", "lora",
                                  "vae_tile")} == \
        {"model": "tiny", "dtype": "float32", "width": 64, "height": 64, "latent_width": 8, "latent_height": 8,
         "latent_channels": 4, "lora": [], "vae_tile": None,
         "text_hidden": 32, "max_length": 77, "requires_f16": False}
    compiled = [json.loads((Layout.from_config(tiny_f32).compile_dir() / f"{s}.json").read_text())
                for s in ("clip", "unet", "vae")]
    assert found["max_buffer_bytes"] == max(c["webgpu"]["max_buffer_bytes"] for c in compiled)
    # the limits the page requests: for each limit, the largest any submodel needs
    for name, value in found["required_limits"].items():
        assert value == max(c["webgpu"]["required_limits"][name] for c in compiled)
    assert found["limits_profile"] == "default" and found["seed"] == 0
    assert found["scheduler"]["beta_schedule"] == "scaled_linear"
    # SD v1.x: classifier-free guidance, the page's usual defaults
    assert found["classifier_free"] is True
    assert found["defaults"] == {"steps": 20, "guidance": 7.5, "scheduler": "dpm++2m"}


