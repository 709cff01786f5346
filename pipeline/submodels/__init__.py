"""The submodels the page runs, each traced, compiled, sharded and verified on its own.

A submodel module provides:
  COMPONENT        the diffusers folder component it loads (text_encoder, unet, vae)
  OUTPUT           name of the entry function's result
  wrapper(cfg)     the torch module whose ``forward`` is the page's entry function (the page's contract:
                   clip(input_ids), unet(latents, timestep, text_emb, guidance_scale), vae(latents))
  inputs(dims, generator)  an ordered dict of valid example inputs (tracing and verification)
Adding a submodel is one module plus one ``REGISTRY`` line.
"""
from __future__ import annotations

from types import ModuleType

from ..errors import WebsdError
from . import clip, unet, vae

REGISTRY: dict[str, ModuleType] = {
    "clip": clip,
    "unet": unet,
    "vae": vae,
}


def names() -> tuple[str, ...]:
    """The submodels, in the page's order: one task per stage and submodel."""
    return tuple(REGISTRY)


def get(name: str) -> ModuleType:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WebsdError(f"unknown submodel {name!r}; choose one of {', '.join(REGISTRY)}") from None
