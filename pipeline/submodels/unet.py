"""unet(latents f32[1,4,h,w], timestep f32[1], text_emb f32[2,77,H], guidance_scale f32[1]) -> f32[1,4,h,w].

One denoiser call with classifier-free guidance inside: the UNet runs on the batch [uncond, cond] and the
wrapper returns ``u + g * (c - u)``, so the page makes one call per step.

A model without guidance (``Dims.classifier_free`` False: SD-Turbo) is traced as
unet(latents f32[1,4,h,w], timestep f32[1], text_emb f32[1,77,H]) -> f32[1,4,h,w]: the UNet at batch 1, once per
step, with no half to throw away. A UNet that embeds the guidance scale (LCM: ``time_cond_proj_dim``) is traced as
unet(latents, timestep, text_emb f32[1,77,H], guidance_scale f32[1]): batch 1, the scale embedded as diffusers'
LatentConsistencyModelPipeline does (w = scale - 1).
"""
from __future__ import annotations

from ..config import Config
from . import get
from .attention import FusedAttnProcessor


def wrapper(cfg: Config):
    import torch

    from ..model import hf

    from .. import models

    unet = hf.load_component(cfg, get("unet").component)
    unet.set_attn_processor(FusedAttnProcessor())
    dims = models.dims(cfg)
    if dims.guidance_embedding:
        return _embedded_guidance_entry(unet).eval()
    if not dims.classifier_free:
        return _unguided_entry(unet).eval()

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


def _unguided_entry(unet):
    import torch

    class UNetEntry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, latents, timestep, text_emb):
            return self.unet(latents, timestep, encoder_hidden_states=text_emb, return_dict=False)[0]

    return UNetEntry()


def guidance_scale_embedding(w, embedding_dim: int):
    """diffusers' LatentConsistencyModelPipeline.get_guidance_scale_embedding: sinusoids of w * 1000."""
    import math

    import torch

    w = w * 1000.0
    half = embedding_dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    emb = w.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if embedding_dim % 2 else emb


def _embedded_guidance_entry(unet):
    import torch

    dim = unet.config.time_cond_proj_dim

    class UNetEntry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, latents, timestep, text_emb, guidance_scale):
            # LCM's guidance scale is the paper's w + 1 (the pipeline subtracts 1)
            w_embedding = guidance_scale_embedding(guidance_scale - 1, dim)
            return self.unet(latents, timestep, encoder_hidden_states=text_emb, timestep_cond=w_embedding,
                             return_dict=False)[0]

    return UNetEntry()


def inputs(dims, generator) -> dict:
    import torch

    example = {
        "latents": torch.randn((1, dims.latent_channels, dims.latent_height, dims.latent_width), generator=generator),
        "timestep": torch.rand((1,), generator=generator) * 999,
        "text_emb": torch.randn((dims.text_batch, dims.max_length, dims.text_hidden), generator=generator),
    }
    if dims.classifier_free or dims.guidance_embedding:
        example["guidance_scale"] = torch.tensor([7.5])
    return example
