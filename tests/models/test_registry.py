"""pipeline.models: registry, sizes, materialized weights, bad model folders."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline import hf, manifest, models, submodels
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.fsutil import sha256_file
from tests.model_build import tiny_config, tiny_weights  # noqa: F401 - fixture


def cfg_for(tmp_path, **overrides):
    return load_config(cli={"paths.cache": str(tmp_path / "cache"), **overrides})


def test_registered_families_have_their_sizes(tmp_path):
    tiny = models.dims(cfg_for(tmp_path))
    assert (tiny.image_size, tiny.latent_size, tiny.text_hidden, tiny.max_length, tiny.vocab_size) == \
        (64, 8, 32, 77, 49408)
    sd15 = models.dims(cfg_for(tmp_path, **{"model.name": "sd15-random"}))
    assert (sd15.image_size, sd15.latent_size, sd15.latent_channels, sd15.text_hidden) == (512, 64, 4, 768)


def test_image_size_override_must_fit_the_unet(tmp_path):
    assert models.dims(cfg_for(tmp_path, **{"model.image_size": "96"})).latent_size == 12
    with pytest.raises(WebsdError, match="multiple of 16"):
        models.dims(cfg_for(tmp_path, **{"model.image_size": "72"}))


def test_unknown_model_name_names_the_fix(tmp_path):
    with pytest.raises(WebsdError) as e:
        models.source(cfg_for(tmp_path, **{"model.name": str(tmp_path / "nowhere")}))
    assert "tiny, sd15-random" in str(e.value) and "\n" not in str(e.value)


def test_local_folder_without_a_component_is_refused(tmp_path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")
    with pytest.raises(WebsdError, match="text_encoder/config.json"):
        models.source(cfg_for(tmp_path, **{"model.name": str(folder)}))


def test_materialized_weights_are_deterministic_and_named_in_advance(tmp_path, tiny_weights):  # noqa: F811
    for sub in ("clip", "unet", "vae"):
        assert all(p.is_file() for p in hf.weight_files(tiny_weights, submodels.get(sub).COMPONENT))
    again = tiny_config(tmp_path / "again")
    hf.materialize(again)
    for sub in ("clip", "unet", "vae"):
        assert [sha256_file(p) for p in hf.weight_files(again, submodels.get(sub).COMPONENT)] == \
            [sha256_file(p) for p in hf.weight_files(tiny_weights, submodels.get(sub).COMPONENT)]
    other_seed = tiny_config(tmp_path / "seed", **{"model.seed": "7"})
    hf.materialize(other_seed)
    unet_weights = hf.weight_files(other_seed, "unet")[1]
    assert sha256_file(unet_weights) != sha256_file(hf.weight_files(tiny_weights, "unet")[1])


def test_local_folder_loads_and_corrupt_weights_are_a_one_line_error(tmp_path, tiny_weights):  # noqa: F811
    folder = tmp_path / "local"
    shutil.copytree(models.source(tiny_weights).folder, folder)
    cfg = cfg_for(tmp_path, **{"model.name": str(folder)})
    assert not models.materialized(cfg)
    assert hf.materialize(cfg) == folder.resolve()  # nothing written for a local folder
    assert hf.load_component(cfg, "vae").config.latent_channels == 4
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WebsdError) as e:
        hf.load_component(cfg, "vae")
    assert str(folder / "vae") in str(e.value) and "\n" not in str(e.value)


def test_scheduler_config_is_sd15s_schedule(tmp_path, tiny_weights):  # noqa: F811
    sched = models.scheduler_config(tiny_weights)
    assert sched["_class_name"] == "DPMSolverMultistepScheduler"
    assert (sched["beta_start"], sched["beta_end"], sched["beta_schedule"], sched["num_train_timesteps"],
            sched["prediction_type"]) == (0.00085, 0.012, "scaled_linear", 1000, "epsilon")
    # what the manifest carries must be strict JSON (DPMSolver's lambda_min_clipped is -inf)
    json.dumps(manifest._json_safe(sched), allow_nan=False)


