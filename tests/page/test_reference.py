"""pipeline.page.reference: diffusers as the page's reference, with the site's VAE tiling."""
from __future__ import annotations

from pipeline import models
from pipeline.page.reference import load_reference_pipeline
from pipeline.submodels import code
from tests.model_build import tiny_config, tiny_weights  # noqa: F401 - fixture


def test_the_reference_decodes_with_the_manifests_vae_tile(tiny_weights):  # noqa: F811
    import torch

    folder = models.weights_dir(tiny_weights)
    assert not load_reference_pipeline(folder, None).vae.use_tiling
    pipe = load_reference_pipeline(folder, None, vae_tile=32)
    assert (pipe.vae.use_tiling, pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size) == (True, 32, 4)
    cfg = tiny_config(tiny_weights.paths.cache_dir, **{"model.vae_tile": "32"})
    latents = code.entry("vae").inputs(models.dims(cfg), torch.Generator().manual_seed(0))["latents"]
    with torch.no_grad():
        ours = code.entry("vae").wrapper(cfg)(latents)
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    reference = ((image / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1)
    assert float((ours - reference).abs().max()) <= 1e-5 * 255
