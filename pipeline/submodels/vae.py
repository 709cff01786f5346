"""vae(latents f32[1,4,h,w]) -> f32[1, 8h, 8w, 3] with values in 0..255 (NHWC, ready for an RGBA canvas).

Only the decoder half of the autoencoder is traced (post_quant_conv + decoder), so the encoder's weights are
neither compiled nor downloaded. The wrapper applies 1/scaling_factor (and shift_factor if the model has one).
Past the size whose activations fit the WebGPU binding limit it decodes overlapping tiles blended as diffusers'
``AutoencoderKL.tiled_decode`` does (``model.vae_tile``, pipeline/submodels/vae_tiling.py), with functional ops
that torch.export and TVM's importer take.
"""
from __future__ import annotations

from ..config import Config
from . import get, vae_tiling
from .attention import FusedAttnProcessor


def wrapper(cfg: Config):
    import torch

    from ..model import hf

    vae = hf.load_component(cfg, get("vae").component)
    vae.set_attn_processor(FusedAttnProcessor())
    scaling = float(vae.config.scaling_factor)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    use_post_quant_conv = getattr(vae.config, "use_post_quant_conv", True) and vae.post_quant_conv is not None
    tile = vae_tiling.resolve(cfg)

    class VaeDecodeEntry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.post_quant_conv = vae.post_quant_conv if use_post_quant_conv else None
            self.decoder = vae.decoder

        def decode(self, z):
            if self.post_quant_conv is not None:
                z = self.post_quant_conv(z)
            return self.decoder(z)

        def forward(self, latents):
            z = latents / scaling + shift
            image = tiled_decode(self.decode, z, tile, vae_tiling.upscale(vae.config)) if tile else self.decode(z)
            pixels = (image / 2 + 0.5) * 255
            # clamp to 0..255 written with relu: TVM imports clamp as R.clip with integer bounds, which
            # relax.transform.ToMixedPrecision (float16 builds) rejects ("Expected TensorType, but got T.int64")
            pixels = 255 - torch.relu(255 - torch.relu(pixels))
            return pixels.permute(0, 2, 3, 1)

    return VaeDecodeEntry().eval()


def _ramp(extent: int, rising: bool, dim: int):
    """diffusers' blend weights ``y / extent`` (or ``1 - y / extent``), computed in Python floats as it does,
    along ``dim`` of an NCHW tile."""
    import torch

    shape = [1, 1, 1, 1]
    shape[dim] = extent
    return torch.tensor([y / extent if rising else 1 - y / extent for y in range(extent)]).reshape(shape)


def _blend(a, b, extent: int, dim: int):
    """``b`` with its first rows (dim 2) or columns (dim 3) faded in from ``a``'s last ones: diffusers'
    ``blend_v``/``blend_h`` without its in-place row loop."""
    import torch

    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent == 0:
        return b
    mixed = (a.narrow(dim, a.shape[dim] - extent, extent) * _ramp(extent, False, dim)
             + b.narrow(dim, 0, extent) * _ramp(extent, True, dim))
    if extent == b.shape[dim]:  # a last tile no wider than the blend (no empty slice: TVM's schedules divide by it)
        return mixed
    return torch.cat([mixed, b.narrow(dim, extent, b.shape[dim] - extent)], dim=dim)


def tiled_decode(decode, z, tile: int, upscale: int):
    """diffusers' ``AutoencoderKL.tiled_decode`` of latents ``z`` with ``tile_sample_min_size = tile``: latent tiles of
    tile / upscale, a stride of 3/4 of that, each tile blended with its top and left neighbours after those were
    blended themselves (diffusers blends in place, row by row), cropped to the stride and concatenated."""
    import torch

    latent_tile = tile // upscale
    stride = int(latent_tile * (1 - vae_tiling.OVERLAP))
    extent = int(tile * vae_tiling.OVERLAP)
    keep = tile - extent
    rows = []
    for i in range(0, z.shape[2], stride):
        row = []
        for j in range(0, z.shape[3], stride):
            decoded = decode(z[:, :, i:i + latent_tile, j:j + latent_tile])
            if rows:
                decoded = _blend(rows[-1][len(row)], decoded, extent, 2)
            if row:
                decoded = _blend(row[-1], decoded, extent, 3)
            row.append(decoded)
        rows.append(row)
    return torch.cat([torch.cat([t[:, :, :keep, :keep] for t in row], dim=3) for row in rows], dim=2)


def inputs(dims, generator) -> dict:
    import torch

    # latents as the sampler produces them: unit variance in the scaled space
    return {"latents": torch.randn((1, dims.latent_channels, dims.latent_height, dims.latent_width),
                                   generator=generator)}
