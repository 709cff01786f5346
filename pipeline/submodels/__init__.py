"""The submodels the page runs, each traced, compiled, sharded and verified on its own.

A submodel is a ``Submodel`` record here (what every stage reads) and an entry module ``<name>.py`` with its code:
  wrapper(cfg)             the torch module whose ``forward`` is the page's entry function (the page's contract:
                           clip(input_ids), unet(latents, timestep, text_emb, guidance_scale), vae(latents))
  inputs(dims, generator)  an ordered dict of valid example inputs (tracing and verification)
Only the stages that run a wrapper import the entry modules (through pipeline.submodels.code), so editing one makes
only its own ``trace``/``verify`` stale, not ``shard`` or ``link``. Adding a submodel is one module, one record
here and one line in pipeline/submodels/code.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import WebsdError


@dataclass(frozen=True)
class Submodel:
    name: str  # also the entry function's name and the entry module's
    component: str  # the diffusers folder component it loads (text_encoder, unet, vae)
    output: str  # the name of the entry function's result
    # its inputs have the image's shape: one build per size of model.sizes (pipeline.sizes); clip takes token ids
    image_sized: bool = True

    @property
    def module(self) -> str:
        """The entry module with its code."""
        return f"{__name__}.{self.name}"


REGISTRY: dict[str, Submodel] = {s.name: s for s in (
    Submodel("clip", component="text_encoder", output="text_emb", image_sized=False),
    Submodel("unet", component="unet", output="noise_pred"),
    Submodel("vae", component="vae", output="image"),
)}


def names() -> tuple[str, ...]:
    """The submodels, in the page's order: one task per stage and submodel."""
    return tuple(REGISTRY)


def get(name: str) -> Submodel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WebsdError(f"unknown submodel {name!r}; choose one of {', '.join(REGISTRY)}") from None
