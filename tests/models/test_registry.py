"""pipeline.models: registry, sizes, materialized weights, bad model folders."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.model import hf
from pipeline.page import manifest
from pipeline import models, submodels
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.fsutil import sha256_file
from tests.model_build import tiny_config, tiny_weights  # noqa: F401 - fixture


def cfg_for(tmp_path, **overrides):
    return load_config(cli={"paths.cache": str(tmp_path / "cache"), **overrides})


def test_registered_families_have_their_sizes(tmp_path):
    tiny = models.dims(cfg_for(tmp_path))
    assert (tiny.width, tiny.height, tiny.latent_width, tiny.latent_height, tiny.text_hidden, tiny.max_length,
            tiny.vocab_size) == (64, 64, 8, 8, 32, 77, 49408)
    sd15 = models.dims(cfg_for(tmp_path, **{"model.name": "sd15-random"}))
    assert (sd15.width, sd15.height, sd15.latent_width, sd15.latent_channels, sd15.text_hidden) == \
        (512, 512, 64, 4, 768)


def test_sd2_layout_families_have_their_sizes_and_no_guidance(tmp_path):
    turbo = models.dims(cfg_for(tmp_path, **{"model.name": "sd-turbo-random"}))
    assert (turbo.width, turbo.height, turbo.latent_width, turbo.text_hidden, turbo.classifier_free) == \
        (512, 512, 64, 1024, False)
    defaults = models.page_defaults(cfg_for(tmp_path, **{"model.name": "sd-turbo-random"}))
    assert (defaults.steps, defaults.guidance, defaults.scheduler) == (1, 0.0, "euler-a")
    unet = models.component_config(cfg_for(tmp_path, **{"model.name": "sd-turbo-random"}), "unet")
    assert unet["use_linear_projection"] and unet["attention_head_dim"] == [5, 10, 20, 20]
    text = models.component_config(cfg_for(tmp_path, **{"model.name": "sd-turbo-random"}), "text_encoder")
    assert (text["hidden_act"], text["num_hidden_layers"]) == ("gelu", 23)  # ViT-H without its last layer
    scheduler = models.scheduler_config(cfg_for(tmp_path, **{"model.name": "tiny-turbo"}))
    assert (scheduler["_class_name"], scheduler["timestep_spacing"]) == ("EulerDiscreteScheduler", "trailing")
    assert models.dims(cfg_for(tmp_path)).classifier_free  # SD v1.x keeps guidance


def test_image_size_override_must_fit_the_unet(tmp_path):
    square = models.dims(cfg_for(tmp_path, **{"model.image_size": "96"}))
    assert (square.latent_width, square.latent_height) == (12, 12)
    with pytest.raises(WebsdError, match="model.image_size 72 must be a positive multiple of 16"):
        models.dims(cfg_for(tmp_path, **{"model.image_size": "72"}))


def test_width_and_height(tmp_path):
    wide = models.dims(cfg_for(tmp_path, **{"model.width": "64", "model.height": "48"}))
    assert (wide.width, wide.height, wide.latent_width, wide.latent_height) == (64, 48, 8, 6)
    # model.image_size gives the side that width/height leave out; the model's own size the rest
    mixed = models.dims(cfg_for(tmp_path, **{"model.image_size": "96", "model.height": "32"}))
    assert (mixed.width, mixed.height) == (96, 32)
    assert models.dims(cfg_for(tmp_path, **{"model.width": "32"})).height == 64
    sd15 = models.dims(cfg_for(tmp_path, **{"model.name": "sd15-random", "model.width": "512", "model.height": "768"}))
    assert (sd15.latent_width, sd15.latent_height) == (64, 96)
    with pytest.raises(WebsdError, match="model.height 40 must be a positive multiple of 16.*model.height=0"):
        models.dims(cfg_for(tmp_path, **{"model.height": "40"}))
    with pytest.raises(WebsdError, match="model.width must be a number of pixels"):
        cfg_for(tmp_path, **{"model.width": "-8"})


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
        assert all(p.is_file() for p in hf.weight_files(tiny_weights, submodels.get(sub).component))
    again = tiny_config(tmp_path / "again")
    hf.materialize(again)
    for sub in ("clip", "unet", "vae"):
        assert [sha256_file(p) for p in hf.weight_files(again, submodels.get(sub).component)] == \
            [sha256_file(p) for p in hf.weight_files(tiny_weights, submodels.get(sub).component)]
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




def test_registry_entries_are_typed_and_name_their_module():
    import importlib

    from pipeline.models.family import ModelFamily

    for name, family in models.REGISTRY.items():
        assert isinstance(family, ModelFamily), name
        assert importlib.import_module(family.module).FAMILY is family, name
        assert set(family.components) == set(models.COMPONENTS), name
    assert models.REGISTRY["tiny"].cpu_verify and not models.REGISTRY["sd15-random"].cpu_verify


def _config_folder(root, family_name: str, **unet_changes):
    """A diffusers folder holding only the configs of a registered family (layout recognition reads no weights)."""
    family = models.REGISTRY[family_name]
    folder = root / family_name
    for component, (cls_path, conf) in family.components.items():
        (folder / component).mkdir(parents=True)
        conf = {**conf, **unet_changes} if component == "unet" else conf
        extra = {"model_type": "clip_text_model"} if cls_path.startswith("transformers.") else \
            {"_class_name": cls_path.rsplit(".", 1)[1]}
        (folder / component / "config.json").write_text(json.dumps({**extra, **conf}))
    sched_cls, sched_conf = family.scheduler
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": sched_cls.rsplit(".", 1)[1], **sched_conf}))
    return folder


@pytest.mark.parametrize("family,layout", [("tiny", "SD 1.x"), ("sd15-random", "SD 1.x"), ("tiny-sd21", "SD 2.x"),
                                           ("sd21-random", "SD 2.x"), ("tiny-turbo", "SD-Turbo"),
                                           ("sd-turbo-random", "SD-Turbo"), ("tiny-lcm", "LCM"),
                                           ("lcm-random", "LCM")])
def test_local_folders_are_recognised_by_their_configs(tmp_path, family, layout):
    folder = _config_folder(tmp_path, family)
    found = models.folder_layout(folder)
    assert found.name == layout
    # the defaults a local copy gets are the registered family's
    assert found.defaults == models.REGISTRY[family].defaults
    cfg = cfg_for(tmp_path, **{"model.name": str(folder)})
    assert models.dims(cfg).classifier_free == models.dims(cfg_for(tmp_path, **{"model.name": family})).classifier_free


@pytest.mark.parametrize("change,message", [
    ({"in_channels": 9}, "takes 9 channels"),
    ({"addition_embed_type": "text_time"}, "SDXL"),
    ({"cross_attention_dim": 2048}, "2048-wide"),  # a text encoder of another width (SDXL's concatenation)
    ({"_class_name": "UNet2DModel"}, "UNet2DModel"),
])
def test_an_unsupported_local_layout_is_one_line(tmp_path, change, message):
    folder = _config_folder(tmp_path, "tiny-sd21", **change)
    with pytest.raises(WebsdError) as e:
        models.source(cfg_for(tmp_path, **{"model.name": str(folder)}))
    assert message in str(e.value) and "\n" not in str(e.value) and "model.name" in str(e.value)


def test_an_lcm_without_guidance_embedding_defaults_to_no_guidance(tmp_path):
    folder = _config_folder(tmp_path, "tiny-lcm", time_cond_proj_dim=None)
    found = models.folder_layout(folder)
    assert (found.name, found.defaults.guidance, found.defaults.scheduler) == ("LCM", 1.0, "lcm")
    dims = models.dims(cfg_for(tmp_path, **{"model.name": str(folder)}))
    assert not dims.classifier_free and not dims.guidance_embedding
