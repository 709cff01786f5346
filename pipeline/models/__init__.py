"""The model registry: which Stable Diffusion weights the pipeline builds (``model.name``), and its sizes.

A name is either a registered family (a module here with ``COMPONENTS`` and ``SCHEDULER`` config dicts, built with
random weights from ``model.seed``) or the path of a local diffusers folder (``text_encoder/``, ``unet/``,
``vae/``, ``scheduler/``). Adding a family is one module plus one ``REGISTRY`` line.

Registered families are materialized once as a diffusers folder in the cache (stage ``weights``,
pipeline/hf.py), so every later stage reads model weights from files whose change doit can detect, whatever the
model's origin. Standard library only: this module reads configs, never weights.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..config import Config
from ..errors import WebsdError
from ..layout import Layout
from . import sd15_random, tiny
from .schedules import SD1_SCHEDULER

REGISTRY: dict[str, ModuleType] = {
    "tiny": tiny,
    "sd15-random": sd15_random,
}

# diffusers folder components the pipeline reads (the tokenizer comes from pipeline.tokenizer)
COMPONENTS = ("text_encoder", "unet", "vae")


@dataclass(frozen=True)
class ModelSource:
    name: str  # cfg.model.name as given
    folder: Path  # the diffusers folder the stages load (in the cache for registered families)
    family: ModuleType | None  # the registry module, None for a local folder

    @property
    def builtin(self) -> bool:
        return self.family is not None


@dataclass(frozen=True)
class Dims:
    """The sizes the page and the traced entry functions agree on."""

    image_size: int
    latent_size: int
    latent_channels: int
    text_hidden: int
    max_length: int
    vocab_size: int


def weights_dir(cfg: Config) -> Path:
    """Where a registered family's diffusers folder is materialized."""
    return Layout.from_config(cfg).model_dir / "diffusers"


def source(cfg: Config) -> ModelSource:
    name = cfg.model.name
    if name in REGISTRY:
        return ModelSource(name, weights_dir(cfg), REGISTRY[name])
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise WebsdError(f"model.name {name!r} is neither a registered model ({', '.join(REGISTRY)}) nor an "
                         "existing diffusers folder; set model.name to one of those or to a local folder path")
    folder = folder.resolve()
    for component in COMPONENTS:
        if not (folder / component / "config.json").is_file():
            raise WebsdError(f"diffusers folder {folder} has no {component}/config.json; point model.name at a "
                             "folder with text_encoder/, unet/ and vae/ (save_pretrained layout)")
    return ModelSource(name, folder, None)


def component_config(cfg: Config, component: str) -> dict:
    """The config dict of a component, read without torch (from code for registered families)."""
    src = source(cfg)
    if src.builtin:
        if component == "scheduler":
            return dict(src.family.SCHEDULER[1])
        return dict(src.family.COMPONENTS[component][1])
    path = src.folder / component / ("scheduler_config.json" if component == "scheduler" else "config.json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WebsdError(f"{path} is missing; the diffusers folder needs it") from None
    except json.JSONDecodeError as e:
        raise WebsdError(f"{path} is not valid JSON ({e}); repair or re-download the model folder") from None


def scheduler_config(cfg: Config) -> dict:
    """The model's scheduler config for the manifest: the diffusers config dict as saved in the folder."""
    src = source(cfg)
    path = src.folder / "scheduler" / "scheduler_config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise WebsdError(f"{path} is not valid JSON ({e}); repair the model folder") from None
    if src.builtin:  # before the weights stage ran
        cls, conf = src.family.SCHEDULER
        return {"_class_name": cls.rsplit(".", 1)[1], **conf}
    cls, conf = SD1_SCHEDULER  # the usual one for a folder without scheduler/
    return {"_class_name": cls.rsplit(".", 1)[1], **conf}


def dims(cfg: Config) -> Dims:
    """Image/latent/text sizes, validated (``model.image_size`` 0 means the model's own size)."""
    text = component_config(cfg, "text_encoder")
    unet = component_config(cfg, "unet")
    vae = component_config(cfg, "vae")
    vae_scale = 2 ** (len(vae.get("block_out_channels", [64])) - 1)
    image_size = cfg.model.image_size or unet.get("sample_size", 64) * vae_scale
    # every UNet down block but the last halves the latent; the VAE upsamples it back
    multiple = vae_scale * 2 ** (len(unet.get("block_out_channels", [0, 0, 0, 0])) - 1)
    if image_size <= 0 or image_size % multiple:
        raise WebsdError(f"model.image_size {image_size} must be a positive multiple of {multiple} for "
                         f"{cfg.model.name}; set model.image_size=0 for its default")
    return Dims(image_size=image_size, latent_size=image_size // vae_scale,
                latent_channels=unet.get("in_channels", 4), text_hidden=text.get("hidden_size", 768),
                max_length=text.get("max_position_embeddings", 77), vocab_size=text.get("vocab_size", 49408))


def materialized(cfg: Config) -> bool:
    """True when the ``weights`` stage writes the model's folder (a registered family), False for a local folder."""
    return cfg.model.name in REGISTRY
