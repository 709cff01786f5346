"""The VAE's tile size (pipeline/submodels/vae_tiling.py) and the tiled decode of the vae wrapper against
diffusers' ``enable_tiling()`` decode."""
from __future__ import annotations

import pytest

from pipeline import models
from pipeline.errors import WebsdError
from pipeline.model import hf
from pipeline.models import sd15_random
from pipeline.submodels import code, vae_tiling
from pipeline.webgpu import limits
from tests.model_build import tiny_config, tiny_weights  # noqa: F401 - fixture

SD15_VAE = sd15_random.FAMILY.components["vae"][1]
DEFAULT_BINDING = limits.PROFILES["default"]["maxStorageBufferBindingSize"]


@pytest.mark.parametrize("dtype, size, tile", [("float16", 768, 512), ("float32", 512, 256), ("float16", 512, 0),
                                                ("float32", 1024, 256), ("float16", 1024, 512)])
def test_sd15_tiles_are_the_largest_that_fit_the_default_binding_size(dtype, size, tile):
    assert vae_tiling.tile_size(SD15_VAE, size, size, dtype, DEFAULT_BINDING) == tile
    bytes_per = vae_tiling.DTYPE_BYTES[dtype]
    if tile:  # the tile fits, twice the tile (or the whole image) would not
        assert vae_tiling.largest_activation(SD15_VAE, tile, tile) * bytes_per <= DEFAULT_BINDING
        assert vae_tiling.largest_activation(SD15_VAE, min(2 * tile, size), min(2 * tile, size)) * bytes_per > \
            DEFAULT_BINDING


def test_the_largest_sd15_activation_is_the_last_up_blocks_input():
    # 256 channels at full resolution (the third up block's upsampled output)
    assert vae_tiling.largest_activation(SD15_VAE, 512, 768) == 256 * 512 * 768


def test_desktop_limits_need_no_tile_for_sd15_at_1024():
    desktop = limits.PROFILES["desktop"]["maxStorageBufferBindingSize"]
    assert vae_tiling.tile_size(SD15_VAE, 1024, 1024, "float32", desktop) == 0


def test_a_binding_size_no_tile_fits_is_one_line_naming_the_fix():
    with pytest.raises(WebsdError, match="webgpu.limits=desktop"):
        vae_tiling.tile_size(SD15_VAE, 1024, 1024, "float32", 1 << 19)


def test_resolve_follows_the_config(tmp_path):
    def tile(**cli):
        return vae_tiling.resolve(tiny_config(tmp_path / "cache", **cli))

    assert tile() == 0  # the tiny model's 64 px fit
    assert tile(**{"model.vae_tile": "32"}) == 32
    assert tile(**{"model.vae_tile": "64"}) == 0  # the whole image is one tile: diffusers does not tile
    assert tile(**{"model.name": "sd15-random", "model.dtype": "float16", "model.image_size": "768"}) == 512
    assert tile(**{"model.name": "sd15-random", "model.image_size": "512"}) == 256
    assert tile(**{"model.name": "sd15-random", "model.image_size": "512", "webgpu.limits": "desktop"}) == 0
    with pytest.raises(WebsdError, match="model.vae_tile 48 must be a multiple of 32"):
        tile(**{"model.vae_tile": "48"})


@pytest.mark.parametrize("width, height, grid", [(48, 48, (2, 2)), (64, 48, (2, 3)), (48, 64, (3, 2)),
                                                 (64, 64, (3, 3)), (80, 48, (2, 4))])
def test_tiled_wrapper_equals_diffusers_enable_tiling(tiny_weights, width, height, grid):  # noqa: F811
    """Square and not, 2 to 4 tiles a side; at 80 px the last column of tiles is exactly as wide as the blend."""
    import torch

    tile = 32
    cfg = tiny_config(tiny_weights.paths.cache_dir, **{"model.vae_tile": str(tile), "model.width": str(width),
                                                       "model.height": str(height)})
    dims = models.dims(cfg)
    latent_tile = tile // 8
    stride = int(latent_tile * 0.75)
    assert (-(-dims.latent_height // stride), -(-dims.latent_width // stride)) == grid
    latents = code.entry("vae").inputs(dims, torch.Generator().manual_seed(0))["latents"]
    vae = hf.load_component(cfg, "vae")
    vae.enable_tiling()
    vae.tile_sample_min_size, vae.tile_latent_min_size = tile, latent_tile
    with torch.no_grad():
        pixels = code.entry("vae").wrapper(cfg)(latents)
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
        untiled = code.entry("vae").wrapper(tiny_config(tiny_weights.paths.cache_dir, **{
            "model.width": str(width), "model.height": str(height)}))(latents)
    expected = ((decoded / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1)
    assert pixels.shape == (1, height, width, 3)
    assert float((pixels - expected).abs().max()) <= 1e-5 * 255
    assert float((pixels - untiled).abs().max()) > 1  # the tiling is visible: a different decode than untiled
