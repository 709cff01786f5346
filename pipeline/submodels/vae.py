"""vae(latents f32[1,4,h,w]) -> f32[1, 8h, 8w, 3] with values in 0..255 (NHWC, ready for an RGBA canvas).

Only the decoder half of the autoencoder is traced (post_quant_conv + decoder), so the encoder's weights are
neither compiled nor downloaded. The wrapper applies 1/scaling_factor (and shift_factor if the model has one).
"""
from __future__ import annotations

from ..config import Config
from . import get
from .attention import FusedAttnProcessor


def wrapper(cfg: Config):
    import torch

    from ..model import hf

    vae = hf.load_component(cfg, get("vae").component)
    vae.set_attn_processor(FusedAttnProcessor())
    scaling = float(vae.config.scaling_factor)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    use_post_quant_conv = getattr(vae.config, "use_post_quant_conv", True) and vae.post_quant_conv is not None

    class VaeDecodeEntry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.post_quant_conv = vae.post_quant_conv if use_post_quant_conv else None
            self.decoder = vae.decoder

        def forward(self, latents):
            z = latents / scaling + shift
            if self.post_quant_conv is not None:
                z = self.post_quant_conv(z)
            image = self.decoder(z)
            pixels = (image / 2 + 0.5) * 255
            # clamp to 0..255 written with relu: TVM imports clamp as R.clip with integer bounds, which
            # relax.transform.ToMixedPrecision (float16 builds) rejects ("Expected TensorType, but got T.int64")
            pixels = 255 - torch.relu(255 - torch.relu(pixels))
            return pixels.permute(0, 2, 3, 1)

    return VaeDecodeEntry().eval()


def inputs(dims, generator) -> dict:
    import torch

    # latents as the sampler produces them: unit variance in the scaled space
    return {"latents": torch.randn((1, dims.latent_channels, dims.latent_height, dims.latent_width),
                                   generator=generator)}
