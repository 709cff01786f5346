"""The entry wrappers (PyTorch only): the page's contract for clip, unet and vae."""
from __future__ import annotations

import pytest

from pipeline.model import hf
from pipeline import models, submodels
from pipeline.submodels import code
from pipeline.errors import WebsdError
from tests.model_build import tiny_weights  # noqa: F401 - fixture


def test_unknown_submodel_lists_the_known_ones():
    with pytest.raises(WebsdError, match="clip, unet, vae"):
        submodels.get("text")


def test_clip_takes_int32_ids_and_returns_the_last_hidden_state(tiny_weights):  # noqa: F811
    import torch

    dims = models.dims(tiny_weights)
    inputs = code.entry("clip").inputs(dims, torch.Generator().manual_seed(0))
    assert inputs["input_ids"].dtype == torch.int32 and inputs["input_ids"].shape == (2, 77)
    wrapper = code.entry("clip").wrapper(tiny_weights)
    reference = hf.load_component(tiny_weights, "text_encoder")
    with torch.no_grad():
        out = wrapper(inputs["input_ids"])
        expected = reference(input_ids=inputs["input_ids"].long()).last_hidden_state
    assert out.shape == (2, 77, dims.text_hidden)
    assert torch.allclose(out, expected, atol=1e-6)
    buffers = dict(wrapper.named_buffers())
    assert all(b.dtype == torch.int32 for n, b in buffers.items() if n.endswith("position_ids"))


def test_unet_applies_classifier_free_guidance(tiny_weights):  # noqa: F811
    import torch

    dims = models.dims(tiny_weights)
    x = code.entry("unet").inputs(dims, torch.Generator().manual_seed(0))
    wrapper = code.entry("unet").wrapper(tiny_weights)
    unet = hf.load_component(tiny_weights, "unet")
    with torch.no_grad():
        uncond = unet(x["latents"], x["timestep"], encoder_hidden_states=x["text_emb"][:1]).sample
        cond = unet(x["latents"], x["timestep"], encoder_hidden_states=x["text_emb"][1:]).sample
        guided = wrapper(x["latents"], x["timestep"], x["text_emb"], torch.tensor([7.5]))
        only_cond = wrapper(x["latents"], x["timestep"], x["text_emb"], torch.tensor([1.0]))
    assert guided.shape == (1, 4, dims.latent_height, dims.latent_width)
    assert torch.allclose(only_cond, cond, atol=1e-5)
    assert torch.allclose(guided, uncond + 7.5 * (cond - uncond), atol=1e-4)


def test_vae_decodes_scaled_latents_to_nhwc_pixels(tiny_weights):  # noqa: F811
    import torch

    dims = models.dims(tiny_weights)
    latents = code.entry("vae").inputs(dims, torch.Generator().manual_seed(0))["latents"]
    wrapper = code.entry("vae").wrapper(tiny_weights)
    vae = hf.load_component(tiny_weights, "vae")
    with torch.no_grad():
        pixels = wrapper(latents)
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    expected = ((decoded / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1)
    assert pixels.shape == (1, dims.height, dims.width, 3)
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 255
    assert torch.allclose(pixels, expected, atol=1e-3)
    # only the decoder half is traced and shipped
    assert not any(n.startswith("encoder.") or n.startswith("quant_conv.") for n, _ in wrapper.named_parameters())


@pytest.fixture(scope="module")
def tiny_turbo_weights(tmp_path_factory):
    """The materialized tiny SD-Turbo (SD 2.x layout, no classifier-free guidance)."""
    from tests.model_build import tiny_config

    cfg = tiny_config(tmp_path_factory.mktemp("turbo") / "cache", **{"model.name": "tiny-turbo"})
    hf.materialize(cfg)
    return cfg


def test_guidance_free_model_runs_the_unet_once_at_batch_1(tiny_turbo_weights):
    import torch

    dims = models.dims(tiny_turbo_weights)
    assert not dims.classifier_free and dims.text_batch == 1
    x = code.entry("unet").inputs(dims, torch.Generator().manual_seed(0))
    assert list(x) == ["latents", "timestep", "text_emb"]  # no guidance input
    assert x["text_emb"].shape == (1, 77, dims.text_hidden)
    ids = code.entry("clip").inputs(dims, torch.Generator().manual_seed(0))["input_ids"]
    assert ids.shape == (1, 77)
    wrapper = code.entry("unet").wrapper(tiny_turbo_weights)
    unet = hf.load_component(tiny_turbo_weights, "unet")
    assert unet.config.use_linear_projection and list(unet.config.attention_head_dim) == [2, 4]
    with torch.no_grad():
        out = wrapper(*x.values())
        expected = unet(x["latents"], x["timestep"], encoder_hidden_states=x["text_emb"]).sample
    assert out.shape == (1, 4, dims.latent_height, dims.latent_width)
    assert torch.allclose(out, expected, atol=1e-6)
    with torch.no_grad():
        emb = code.entry("clip").wrapper(tiny_turbo_weights)(ids)
    assert emb.shape == (1, 77, dims.text_hidden)


def test_lcm_unet_embeds_the_guidance_scale_at_batch_1(tmp_path):
    import torch
    from diffusers import LatentConsistencyModelPipeline

    from pipeline.submodels.unet import guidance_scale_embedding
    from tests.model_build import tiny_config

    cfg = tiny_config(tmp_path / "cache", **{"model.name": "tiny-lcm"})
    hf.materialize(cfg)
    dims = models.dims(cfg)
    assert dims.guidance_embedding and not dims.classifier_free and dims.text_batch == 1
    x = code.entry("unet").inputs(dims, torch.Generator().manual_seed(0))
    assert list(x) == ["latents", "timestep", "text_emb", "guidance_scale"]
    x["guidance_scale"] = torch.tensor([8.0])
    w = x["guidance_scale"] - 1  # LCM's w: the pipeline embeds the scale minus one
    # diffusers' own embedding (a method that uses nothing of its pipeline)
    expected_emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=32)
    assert torch.allclose(guidance_scale_embedding(w, 32), expected_emb, atol=1e-6)
    unet = hf.load_component(cfg, "unet")
    with torch.no_grad():
        out = code.entry("unet").wrapper(cfg)(*x.values())
        expected = unet(x["latents"], x["timestep"], encoder_hidden_states=x["text_emb"],
                        timestep_cond=expected_emb).sample
        other = code.entry("unet").wrapper(cfg)(x["latents"], x["timestep"], x["text_emb"], torch.tensor([2.0]))
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, other, atol=1e-3)  # the scale reaches the UNet


def test_token_embedding_splits_only_when_over_the_binding_limit():
    from pipeline.models import sd15_random
    from pipeline.submodels.clip import token_embedding_parts
    from pipeline.webgpu import limits

    text = sd15_random.FAMILY.components["text_encoder"][1]
    binding = limits.PROFILES["default"]["maxStorageBufferBindingSize"]
    assert token_embedding_parts(text, "float32", binding) == 2  # 49408 x 768 x 4 = 151.8 MB
    assert token_embedding_parts(text, "float16", binding) == 1
    assert token_embedding_parts(text, "float32", limits.PROFILES["desktop"]["maxStorageBufferBindingSize"]) == 1


def test_split_token_embedding_clip_equals_the_unsplit_one(tiny_weights, monkeypatch):  # noqa: F811
    import torch

    from pipeline.webgpu import limits

    ids = code.entry("clip").inputs(models.dims(tiny_weights), torch.Generator().manual_seed(0))["input_ids"]
    ids[0, :4] = torch.tensor([0, 24703, 24704, 49407], dtype=torch.int32)  # both tables' first and last rows
    with torch.no_grad():
        unsplit = code.entry("clip").wrapper(tiny_weights)
        expected = unsplit(ids)
        # the tiny table is 49408 x 32 x 4 bytes = 6.3 MB: a 4 MiB binding limit splits it in two
        monkeypatch.setitem(limits.PROFILES, "default", {**limits.PROFILES["default"],
                                                         "maxStorageBufferBindingSize": 4 << 20})
        split = code.entry("clip").wrapper(tiny_weights)
        out = split(ids)
    tables = {n.rpartition(".")[2]: p.shape for n, p in split.named_parameters() if "token_embedding" in n}
    assert tables == {"rows_0": (24704, 32), "rows_24704": (24704, 32)}
    assert torch.equal(out, expected)
