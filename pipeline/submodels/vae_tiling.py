"""The VAE decode's tile size (``model.vae_tile``): tiling as diffusers' ``AutoencoderKL.enable_tiling`` does it.

A decoder's largest activation grows with the image (SD v1.5: 256 channels at full resolution, 256 MiB in float32 at
512 x 512), over WebGPU's default 128 MiB ``maxStorageBufferBindingSize``. Decoding overlapping tiles bounds it by
the tile. Automatic: the largest tile, from the VAE's ``sample_size`` down by halves, whose activations fit the
limits profile in force (in ``model.dtype``); no tiling when the whole image fits. Standard library only: the site's
manifest and the trace's fingerprint read it; the tiled decode itself is pipeline/submodels/vae.py.
"""
from __future__ import annotations

from .. import models
from ..config import Config
from ..errors import WebsdError
from ..webgpu import limits

OVERLAP = 0.25  # diffusers' tile_overlap_factor
DTYPE_BYTES = {"float32": 4, "float16": 2}


def upscale(vae_config: dict) -> int:
    """Pixels per latent: each decoder up block but the last doubles the resolution."""
    return 2 ** (len(vae_config.get("block_out_channels", [64])) - 1)


def tile_multiple(vae_config: dict) -> int:
    """Tiles must be a multiple of this many pixels: a latent tile divisible by 4 makes diffusers' stride
    (3/4 of it) whole, so the cropped tiles add up to the image exactly."""
    return 4 * upscale(vae_config)


def largest_activation(vae_config: dict, width: int, height: int) -> int:
    """Elements of the decoder's largest activation for a width x height image: the mid block at the latent's
    resolution, then per up block its input, its output and (all but the last) its upsampled output."""
    channels = list(vae_config.get("block_out_channels", [64]))
    latent = (width // upscale(vae_config)) * (height // upscale(vae_config))
    largest, previous, area = channels[-1] * latent, channels[-1], latent
    for i, out in enumerate(reversed(channels)):
        largest = max(largest, previous * area, out * area)
        if i < len(channels) - 1:
            area *= 4
            largest = max(largest, out * area)
        previous = out
    return largest


def tile_size(vae_config: dict, width: int, height: int, dtype: str, binding_limit: int) -> int:
    """The automatic tile in pixels for a width x height decode, 0 when the whole image fits the binding limit."""
    def fits(w: int, h: int) -> bool:
        return largest_activation(vae_config, w, h) * DTYPE_BYTES[dtype] <= binding_limit

    if fits(width, height):
        return 0
    tile = int(vae_config.get("sample_size", 512))
    while not fits(tile, tile) or tile >= max(width, height):
        tile //= 2
        if tile < tile_multiple(vae_config) or tile % tile_multiple(vae_config):
            raise WebsdError(f"no VAE tile fits {binding_limit} bytes in {dtype} for a {width}x{height} image; set "
                             "webgpu.limits=desktop or a smaller model.width/model.height")
    return tile


def resolve(cfg: Config) -> int:
    """The VAE tile of this build in pixels (``model.vae_tile``, else automatic), 0 for an untiled decode. As
    diffusers, it tiles only when the latent is larger than the tile in either dimension."""
    vae_config = models.component_config(cfg, "vae")
    dims = models.dims(cfg)
    tile = cfg.model.vae_tile
    if tile and tile % tile_multiple(vae_config):
        raise WebsdError(f"model.vae_tile {tile} must be a multiple of {tile_multiple(vae_config)} pixels for "
                         f"{cfg.model.name}; set model.vae_tile=0 for the automatic size")
    tile = tile or tile_size(vae_config, dims.width, dims.height, cfg.model.dtype,
                             limits.profile(cfg.webgpu.limits)["maxStorageBufferBindingSize"])
    return tile if tile and tile < max(dims.width, dims.height) else 0
