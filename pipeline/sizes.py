"""Several image sizes in one site (``model.sizes``): each extra size is the site's config with that width and
height, so its trace/compile/link outputs go where Layout puts that size's, under the same stage fingerprints; the
weights, shards, verification and tokenizer stay the default size's, shared by every size.

Only the submodels that see the image size get a build per size (``Submodel.image_sized``: unet and vae; clip reads
token ids only), and only the stages whose output depends on it (``Stage.per_size``: trace, compile, link).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

from . import models
from .config import Config
from .errors import WebsdError


class Size(NamedTuple):
    width: int
    height: int

    @property
    def name(self) -> str:
        """How the manifest, the page, the runner (``--size``) and the task names call it: ``<width>x<height>``."""
        return f"{self.width}x{self.height}"


def at_size(cfg: Config, size: Size) -> Config:
    """The site's config at one size: what that size's stages run with (and Layout maps to its paths)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width=size.width, height=size.height,
                                                              image_size=0, sizes=""))


def overrides(size: Size) -> dict[str, str]:
    """``at_size`` as command-line config (a stage run in a child process)."""
    return {"model.width": str(size.width), "model.height": str(size.height), "model.image_size": "0",
            "model.sizes": ""}


def default(cfg: Config) -> Size:
    d = models.dims(cfg)
    return Size(d.width, d.height)


def extra(cfg: Config) -> list[Size]:
    """The sizes of ``model.sizes`` other than the default one, checked against what the model takes."""
    own, multiple = default(cfg), models.size_multiple(cfg)
    out = []
    for width, height in cfg.model.size_list:
        size = Size(width, height)
        if width % multiple or height % multiple:
            raise WebsdError(f"config model.sizes: {cfg.model.name} takes sides that are multiples of {multiple}, "
                             f"not {size.name}; fix or drop that size")
        if size != own:
            out.append(size)
    return out


def all_sizes(cfg: Config) -> list[tuple[Size, Config]]:
    """Every size of the site with its config, the default first."""
    return [(default(cfg), cfg), *((s, at_size(cfg, s)) for s in extra(cfg))]
