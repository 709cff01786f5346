"""Stage shard_<sub>: the tensor cache holds exactly the model's weights, in call order."""
from __future__ import annotations

import json
import shutil

import numpy as np

import pytest

from pipeline.model import hf, shard, trace
from pipeline import submodels
from pipeline.layout import Layout
from tests.model_build import tiny_config, tiny_f16_clip, tiny_f32  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # builds the tiny model (once per session)

# entry-wrapper parameter name prefix -> (diffusers component, prefix inside its safetensors)
PREFIX = {"clip": ("text_encoder", "text_encoder."), "unet": ("unet", "unet."), "vae": ("vae", "")}


def weights_from_folder(cfg, sub) -> dict:
    from safetensors.numpy import load_file

    _, prefix = PREFIX[sub]
    raw = load_file(str(hf.weight_files(cfg, submodels.get(sub).component)[1]))
    return {prefix + k: v for k, v in raw.items()}


def test_tensor_cache_round_trips_the_weights(tiny_f32):  # noqa: F811
    for sub in ("clip", "unet", "vae"):
        params_dir = Layout.from_config(tiny_f32).params_dir(sub)
        index = json.loads((params_dir / "tensor-cache.json").read_text())
        cache = shard.read_cache(params_dir)
        traced = [p["name"] for p in json.loads(trace.paths(tiny_f32, sub)[1].read_text())["params"]]
        assert list(cache) == traced == index["metadata"]["param_names"]
        weights = weights_from_folder(tiny_f32, sub)
        for name, arr in cache.items():
            assert arr.dtype == np.float32 and np.array_equal(arr, weights[name]), name
        assert all(s["nbytes"] <= 32 << 20 or len(s["records"]) == 1 for s in index["records"])


def test_tvms_own_loader_reads_the_cache(tiny_f32):  # noqa: F811
    import tvm
    from tvm.contrib import tvmjs

    params_dir = Layout.from_config(tiny_f32).params_dir("vae")
    loaded, meta = tvmjs.load_tensor_cache(str(params_dir), tvm.cpu())
    ours = shard.read_cache(params_dir)
    assert meta["function"] == "vae" and meta["ParamSize"] == len(ours)
    assert all(np.array_equal(loaded[n].numpy(), a) for n, a in ours.items())


def test_float16_cache_stores_rounded_weights(tiny_f16_clip):  # noqa: F811
    cache = shard.read_cache(Layout.from_config(tiny_f16_clip).params_dir("clip"))
    weights = weights_from_folder(tiny_f16_clip, "clip")
    for name, arr in cache.items():
        # float16, except tensors whose float16 size is not a multiple of 4 bytes (pipeline.model.params)
        want = np.float16 if (2 * weights[name].size) % 4 == 0 else np.float32
        assert arr.dtype == want and np.array_equal(arr, weights[name].astype(want)), name


def test_shard_needs_only_the_parameter_list_and_the_weights(tmp_path, tiny_f32, monkeypatch):  # noqa: F811
    """Not the traced program (a wrapper edit that keeps the weights must not re-shard) nor compile's output."""
    fresh = tiny_config(tmp_path / "cache")
    src, dst = Layout.from_config(tiny_f32), Layout.from_config(fresh)
    dst.trace_dir().mkdir(parents=True)
    shutil.copy(src.trace_params("clip"), dst.trace_params("clip"))
    shutil.copytree(src.model_dir / "diffusers", dst.model_dir / "diffusers")
    monkeypatch.setattr(shard, "SHARD_CAP_MB", 1)
    shard.run(fresh, "clip")
    assert not trace.paths(fresh, "clip")[0].exists()
    params_dir = Layout.from_config(fresh).params_dir("clip")
    index = json.loads((params_dir / "tensor-cache.json").read_text())
    # the 6 MB token embedding gets a shard of its own, everything else (< 1 MB) shares the next one
    assert [len(s["records"]) for s in index["records"]] == [1, len(index["metadata"]["param_names"]) - 1]
    assert list(shard.read_cache(params_dir)) == index["metadata"]["param_names"]
    assert not Layout.from_config(fresh).compile_dir().exists()


def test_a_split_token_embedding_is_sharded_as_its_row_tables_and_verifies(tmp_path, monkeypatch):
    """A token embedding over the binding limit (here a 4 MiB limit: the tiny table is 6.3 MB) is traced as two row
    tables; shard stores each as those rows of the model's weight, the WebGPU build fits the limit, and the CPU
    build with them equals PyTorch (verify)."""
    from pipeline.model import compile as compile_stage
    from pipeline.webgpu import limits
    from tests.model_build import build_alone

    binding = 4 << 20
    monkeypatch.setitem(limits.PROFILES, "default", {**limits.PROFILES["default"],
                                                     "maxStorageBufferBindingSize": binding})
    cfg = build_alone(tmp_path / "cache", "clip")
    records = [p for p in json.loads(Layout.from_config(cfg).trace_params("clip").read_text())["params"]
               if "rows" in p]
    assert len(records) == 2 and len({p["key"] for p in records}) == 1
    assert records[0]["key"].endswith("token_embedding.weight")
    cache = shard.read_cache(Layout.from_config(cfg).params_dir("clip"))
    table = hf.load_component(cfg, "text_encoder").state_dict()[records[0]["key"]].numpy()
    assert np.array_equal(np.concatenate([cache[p["name"]] for p in records]), table)
    assert json.loads(compile_stage.paths(cfg, "clip")["json"].read_text())["webgpu"]["max_buffer_bytes"] <= binding
    assert json.loads(Layout.from_config(cfg).verify_report("clip").read_text())["passed"]
