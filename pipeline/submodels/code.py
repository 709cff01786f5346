"""The submodels' code: the entry module of each ``Submodel`` record, for the stages that run a wrapper."""
from __future__ import annotations

from types import ModuleType

from . import clip, get, unet, vae

ENTRIES: dict[str, ModuleType] = {m.__name__.rpartition(".")[2]: m for m in (clip, unet, vae)}


def entry(name: str) -> ModuleType:
    """The entry module of a submodel: ``wrapper(cfg)`` and ``inputs(dims, generator)``."""
    get(name)  # an unknown name is one line
    return ENTRIES[name]
