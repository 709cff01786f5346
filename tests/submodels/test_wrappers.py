"""The entry wrappers (PyTorch only): the page's contract for clip, unet and vae."""
from __future__ import annotations

import pytest

from pipeline import hf, models, submodels
from pipeline.errors import WebsdError
from tests.model_build import tiny_weights  # noqa: F401 - fixture


def test_unknown_submodel_lists_the_known_ones():
    with pytest.raises(WebsdError, match="clip, unet, vae"):
        submodels.get("text")


def test_clip_takes_int32_ids_and_returns_the_last_hidden_state(tiny_weights):  # noqa: F811
    import torch

    dims = models.dims(tiny_weights)
    inputs = submodels.clip.inputs(dims, torch.Generator().manual_seed(0))
    assert inputs["input_ids"].dtype == torch.int32 and inputs["input_ids"].shape == (2, 77)
    wrapper = submodels.clip.wrapper(tiny_weights)
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
    x = submodels.unet.inputs(dims, torch.Generator().manual_seed(0))
    wrapper = submodels.unet.wrapper(tiny_weights)
    unet = hf.load_component(tiny_weights, "unet")
    with torch.no_grad():
        uncond = unet(x["latents"], x["timestep"], encoder_hidden_states=x["text_emb"][:1]).sample
        cond = unet(x["latents"], x["timestep"], encoder_hidden_states=x["text_emb"][1:]).sample
        guided = wrapper(x["latents"], x["timestep"], x["text_emb"], torch.tensor([7.5]))
        only_cond = wrapper(x["latents"], x["timestep"], x["text_emb"], torch.tensor([1.0]))
    assert guided.shape == (1, 4, dims.latent_size, dims.latent_size)
    assert torch.allclose(only_cond, cond, atol=1e-5)
    assert torch.allclose(guided, uncond + 7.5 * (cond - uncond), atol=1e-4)


def test_vae_decodes_scaled_latents_to_nhwc_pixels(tiny_weights):  # noqa: F811
    import torch

    dims = models.dims(tiny_weights)
    latents = submodels.vae.inputs(dims, torch.Generator().manual_seed(0))["latents"]
    wrapper = submodels.vae.wrapper(tiny_weights)
    vae = hf.load_component(tiny_weights, "vae")
    with torch.no_grad():
        pixels = wrapper(latents)
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    expected = ((decoded / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1)
    assert pixels.shape == (1, dims.image_size, dims.image_size, 3)
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 255
    assert torch.allclose(pixels, expected, atol=1e-3)
    # only the decoder half is traced and shipped
    assert not any(n.startswith("encoder.") or n.startswith("quant_conv.") for n, _ in wrapper.named_parameters())
