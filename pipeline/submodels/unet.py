"""unet(latents f32[1,4,h,w], timestep f32[1], text_emb f32[2,77,H], guidance_scale f32[1]) -> f32[1,4,h,w].

One denoiser call with classifier-free guidance inside: the UNet runs on the batch [uncond, cond] and the
wrapper returns ``u + g * (c - u)``, so the page makes one call per step.
"""
from __future__ import annotations

from ..config import Config
from .attention import BoundedAttnProcessor

COMPONENT = "unet"
OUTPUT = "noise_pred"


def wrapper(cfg: Config):
    import torch

    from .. import hf

    unet = hf.load_component(cfg, COMPONENT)
    unet.set_attn_processor(BoundedAttnProcessor())

    class UNetEntry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, latents, timestep, text_emb, guidance_scale):
            # expand, not torch.cat([latents, latents]): that imports as one concat kernel given the same
            # buffer twice, and WebGPU forbids aliased writable storage bindings
            batch = latents.expand(2, -1, -1, -1)
            noise = self.unet(batch, timestep, encoder_hidden_states=text_emb, return_dict=False)[0]
            uncond, cond = noise.chunk(2)
            return uncond + guidance_scale * (cond - uncond)

    return UNetEntry().eval()


def inputs(dims, generator) -> dict:
    import torch

    size = dims.latent_size
    return {
        "latents": torch.randn((1, dims.latent_channels, size, size), generator=generator),
        "timestep": torch.rand((1,), generator=generator) * 999,
        "text_emb": torch.randn((2, dims.max_length, dims.text_hidden), generator=generator),
        "guidance_scale": torch.tensor([7.5]),
    }
