"""Stage compile_<sub>: Relax import, WebGPU (wasm objects) + llvm builds, buffer sizes."""
from __future__ import annotations

import json

import numpy as np
import tarfile

import pytest

from pipeline.model import compile as compile_stage
from pipeline.model import trace
from tests.model_build import tiny_config, tiny_f16_clip, tiny_f32  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # builds the tiny model (once per session)


def test_compile_outputs_follow_the_page_contract(tiny_f32):  # noqa: F811
    for sub, inputs, output in [
        ("clip", [("input_ids", [2, 77], "int32")], {"shape": [2, 77, 32], "dtype": "float32"}),
        ("unet", [("latents", [1, 4, 8, 8], "float32"), ("timestep", [1], "float32"),
                  ("text_emb", [2, 77, 32], "float32"), ("guidance_scale", [1], "float32")],
         {"shape": [1, 4, 8, 8], "dtype": "float32"}),
        ("vae", [("latents", [1, 4, 8, 8], "float32")], {"shape": [1, 64, 64, 3], "dtype": "float32"}),
    ]:
        paths = compile_stage.paths(tiny_f32, sub)
        desc = json.loads(paths["json"].read_text())
        assert desc["function"] == sub
        assert [(i["name"], i["shape"], i["dtype"]) for i in desc["inputs"]] == inputs
        assert desc["output"] == output
        traced = [p["name"] for p in json.loads(trace.paths(tiny_f32, sub)[1].read_text())["params"]]
        for target in ("webgpu", "llvm"):
            assert [p["name"] for p in desc[target]["params"]] == traced
            assert {p["dtype"] for p in desc[target]["params"]} == {"float32"}
            assert 0 < desc[target]["max_buffer_bytes"] <= 128 << 20 and desc[target]["kernels"] > 0
        with tarfile.open(paths["webgpu"]) as tar:
            members = tar.getmembers()
            assert members and all(m.name.endswith(".o") for m in members)
            assert all(tar.extractfile(m).read(4) == b"\0asm" for m in members)  # wasm object files
        assert paths["llvm"].stat().st_size > 0


def test_float16_build_takes_float16_params_and_keeps_float32_io(tiny_f16_clip):  # noqa: F811
    desc = json.loads(compile_stage.paths(tiny_f16_clip, "clip")["json"].read_text())
    assert desc["dtype"] == "float16"
    # float16, except tensors whose float16 size is not a multiple of 4 bytes (WebGPU could not bind them)
    for p in desc["webgpu"]["params"]:
        odd = (2 * int(np.prod(p["shape"]))) % 4 != 0
        assert p["dtype"] == ("float32" if odd else "float16"), p
    assert "float16" in {p["dtype"] for p in desc["webgpu"]["params"]}
    assert desc["inputs"][0]["dtype"] == "int32" and desc["output"]["dtype"] == "float32"


def test_a_tiled_vae_fits_the_binding_limit_its_tile_was_sized_for(tmp_path, monkeypatch):
    """With a binding limit the whole 64 x 64 decode breaks and a 32 px tile fits (by vae_tiling's accounting), the
    automatic tile is 32, the WebGPU build passes the limits check, and the CPU build equals the tiled wrapper."""
    from pipeline import models
    from pipeline.layout import Layout
    from pipeline.submodels import vae_tiling
    from pipeline.webgpu import limits
    from tests.model_build import build_alone

    vae_config = models.component_config(tiny_config(tmp_path / "cache"), "vae")
    binding = vae_tiling.largest_activation(vae_config, 32, 32) * 4
    assert vae_tiling.largest_activation(vae_config, 64, 64) * 4 > binding
    monkeypatch.setitem(limits.PROFILES, "default", {**limits.PROFILES["default"],
                                                     "maxStorageBufferBindingSize": binding})
    cfg = build_alone(tmp_path / "cache", "vae")
    assert vae_tiling.resolve(cfg) == 32 and json.loads(trace.paths(cfg, "vae")[1].read_text())["vae_tile"] == 32
    desc = json.loads(compile_stage.paths(cfg, "vae")["json"].read_text())
    assert desc["output"]["shape"] == [1, 64, 64, 3]
    assert desc["webgpu"]["max_buffer_bytes"] <= binding
    assert json.loads(Layout.from_config(cfg).verify_report("vae").read_text())["passed"]
