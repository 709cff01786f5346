"""The model registry: which Stable Diffusion weights the pipeline builds (``model.name``), and its sizes.

A name is either a registered family (a module here defining a ``ModelFamily``: component and scheduler configs,
built with random weights from ``model.seed``) or the path of a local diffusers folder (``text_encoder/``, ``unet/``,
``vae/``, ``scheduler/``), whose layout is recognised from its configs (``folder_layout``: SD 1.x, SD 2.x, SD-Turbo,
LCM) and any other refused in one line. Adding a family is one module plus one ``REGISTRY`` line.

Registered families are materialized once as a diffusers folder in the cache (stage ``weights``,
pipeline/model/hf.py), so every later stage reads model weights from files whose change doit can detect, whatever the
model's origin. Standard library only: this module reads configs, never weights.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import WebsdError
from ..layout import Layout
from . import lcm_random, sd15_random, sd21_random, sd_turbo_random, tiny, tiny_lcm, tiny_sd21, tiny_turbo
from .family import ModelFamily, PageDefaults, TokenizerSettings
from .schedules import SD1_SCHEDULER

REGISTRY: dict[str, ModelFamily] = {
    "tiny": tiny.FAMILY,
    "sd15-random": sd15_random.FAMILY,
    "sd-turbo-random": sd_turbo_random.FAMILY,
    "tiny-turbo": tiny_turbo.FAMILY,
    "sd21-random": sd21_random.FAMILY,
    "tiny-sd21": tiny_sd21.FAMILY,
    "lcm-random": lcm_random.FAMILY,
    "tiny-lcm": tiny_lcm.FAMILY,
}

# diffusers folder components the pipeline reads (the tokenizer comes from pipeline.page.tokenizer)
COMPONENTS = ("text_encoder", "unet", "vae")


@dataclass(frozen=True)
class ModelSource:
    name: str  # cfg.model.name as given
    folder: Path  # the diffusers folder the stages load (in the cache for registered families)
    family: ModelFamily | None  # the registry entry, None for a local folder

    @property
    def builtin(self) -> bool:
        return self.family is not None


@dataclass(frozen=True)
class Dims:
    """The sizes the page and the traced entry functions agree on."""

    width: int  # pixels
    height: int
    latent_width: int
    latent_height: int
    latent_channels: int
    text_hidden: int
    max_length: int
    vocab_size: int
    classifier_free: bool = True  # UNet on [negative, prompt] with guidance inside; False: batch 1, no guidance
    guidance_embedding: bool = False  # the UNet takes the guidance scale as an embedding (LCM): batch 1 with it

    @property
    def text_batch(self) -> int:
        """Rows of token ids the text encoder takes and of embeddings the UNet takes."""
        return 2 if self.classifier_free else 1


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
    folder_layout(folder)  # an unsupported layout stops here, in one line
    return ModelSource(name, folder, None)


@dataclass(frozen=True)
class FolderLayout:
    """What a local diffusers folder's configs say it is."""

    name: str  # "SD 1.x", "SD 2.x", "SD-Turbo", "LCM"
    defaults: PageDefaults


# the page's starting settings per recognised layout (the registered families say the same)
LAYOUT_DEFAULTS = {
    "SD 1.x": PageDefaults(),
    "SD 2.x": PageDefaults(steps=25, guidance=7.5, scheduler="dpm++2m"),
    "SD-Turbo": PageDefaults(steps=1, guidance=0.0, scheduler="euler-a"),
    "LCM": PageDefaults(steps=4, guidance=8.0, scheduler="lcm"),
}


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise WebsdError(f"{path} is not valid JSON ({e}); repair or re-download the model folder") from None


def folder_layout(folder: Path) -> FolderLayout:
    """Recognise a diffusers folder's layout from its configs; a layout the pipeline does not build is one line.

    Supported: a text-to-image UNet2DConditionModel on 4 latent channels with one CLIPTextModel as wide as the
    UNet's cross-attention (768 in SD 1.x, 1024 in SD 2.x; smaller in tiny/distilled models). SD 2.x is told apart
    by its OpenCLIP text encoder (GELU, not OpenAI CLIP's quick GELU) or its linear transformer projections. SD-Turbo is SD 2.x with a trailing-spaced Euler scheduler (its
    saved scheduler), LCM any of them with an LCMScheduler (its UNet may embed the guidance scale)."""
    unet = _read_config(folder / "unet" / "config.json")
    text = _read_config(folder / "text_encoder" / "config.json")
    scheduler = _read_config(folder / "scheduler" / "scheduler_config.json")
    fix = "point model.name at an SD 1.x, SD 2.x, SD-Turbo or LCM diffusers folder, or a registered model"

    def refuse(what: str):
        raise WebsdError(f"{folder} is {what}, which this pipeline does not build; {fix}")

    if (folder / "text_encoder_2").is_dir() or unet.get("addition_embed_type"):
        refuse("an SDXL-style model (a second text encoder / added conditioning)")
    if unet.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        refuse(f"a {unet['_class_name']} model (not a UNet2DConditionModel)")
    if unet.get("in_channels", 4) != 4:
        refuse(f"a model whose UNet takes {unet['in_channels']} channels (inpainting or depth: 4 expected)")
    if text.get("model_type", "clip_text_model") != "clip_text_model":
        refuse(f"a model with a {text.get('model_type')} text encoder (CLIPTextModel expected)")
    # a key left out is the library's default (diffusers' 1280, CLIP's 512): compared only when both are said
    width, text_width = unet.get("cross_attention_dim"), text.get("hidden_size")
    if width is not None and text_width is not None and width != text_width:
        refuse(f"a model whose UNet cross-attends to {width}-wide text states and whose text encoder is "
               f"{text_width} wide (one CLIP text encoder as wide as the cross-attention expected)")
    sd2 = text.get("hidden_act") == "gelu" or bool(unet.get("use_linear_projection"))
    layout = "SD 2.x" if sd2 else "SD 1.x"
    if scheduler.get("_class_name") == "LCMScheduler":
        if not unet.get("time_cond_proj_dim"):  # no guidance embedding (e.g. an LCM-LoRA merged): no guidance
            return FolderLayout("LCM", PageDefaults(steps=4, guidance=1.0, scheduler="lcm"))
        layout = "LCM"
    elif layout == "SD 2.x" and scheduler.get("_class_name") == "EulerDiscreteScheduler" and \
            scheduler.get("timestep_spacing") == "trailing":
        layout = "SD-Turbo"
    return FolderLayout(layout, LAYOUT_DEFAULTS[layout])


def component_config(cfg: Config, component: str) -> dict:
    """The config dict of a component, read without torch (from code for registered families)."""
    src = source(cfg)
    if src.builtin:
        if component == "scheduler":
            return dict(src.family.scheduler[1])
        return dict(src.family.components[component][1])
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
        cls, conf = src.family.scheduler
        return {"_class_name": cls.rsplit(".", 1)[1], **conf}
    cls, conf = SD1_SCHEDULER  # the usual one for a folder without scheduler/
    return {"_class_name": cls.rsplit(".", 1)[1], **conf}


def tokenizer_settings(cfg: Config) -> TokenizerSettings:
    """Pad token and max length of the model's tokenizer: the family's, or a local folder's
    ``tokenizer/tokenizer_config.json`` (SD v1.x's settings where it has none)."""
    src = source(cfg)
    if src.builtin:
        return src.family.tokenizer
    path = src.folder / "tokenizer" / "tokenizer_config.json"
    if not path.is_file():
        return TokenizerSettings()
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WebsdError(f"{path} is not valid JSON ({e}); repair or re-download the model folder") from None
    pad = conf.get("pad_token") or TokenizerSettings.pad_token
    if isinstance(pad, dict):  # an AddedToken as older transformers saved it
        pad = pad.get("content", TokenizerSettings.pad_token)
    max_length = conf.get("model_max_length") or TokenizerSettings.max_length
    if not isinstance(max_length, int) or max_length > 10**6:  # transformers writes a huge int for "unset"
        max_length = TokenizerSettings.max_length
    return TokenizerSettings(pad_token=str(pad), max_length=max_length)


def _size_steps(cfg: Config) -> tuple[int, int]:
    """(the VAE's upsampling factor, the multiple of it every image side must be)."""
    vae_scale = 2 ** (len(component_config(cfg, "vae").get("block_out_channels", [64])) - 1)
    # every UNet down block but the last halves the latent; the VAE upsamples it back
    return vae_scale, vae_scale * 2 ** (len(component_config(cfg, "unet").get("block_out_channels", [0] * 4)) - 1)


def size_multiple(cfg: Config) -> int:
    """What every image side must be a multiple of for this model."""
    return _size_steps(cfg)[1]


def dims(cfg: Config) -> Dims:
    """Image/latent/text sizes, validated: ``model.width``/``model.height``, else ``model.image_size`` (square),
    else the model's own size."""
    text = component_config(cfg, "text_encoder")
    unet = component_config(cfg, "unet")
    vae_scale, multiple = _size_steps(cfg)
    own = unet.get("sample_size", 64) * vae_scale
    sizes = {}
    for key in ("width", "height"):
        given = getattr(cfg.model, key) or cfg.model.image_size
        sizes[key] = given or own
        if sizes[key] % multiple:
            name = f"model.{key}" if getattr(cfg.model, key) else "model.image_size"
            raise WebsdError(f"{name} {sizes[key]} must be a positive multiple of {multiple} for "
                             f"{cfg.model.name}; set {name}=0 for its default ({own})")
    return Dims(width=sizes["width"], height=sizes["height"], latent_width=sizes["width"] // vae_scale,
                latent_height=sizes["height"] // vae_scale,
                latent_channels=unet.get("in_channels", 4), text_hidden=text.get("hidden_size", 768),
                max_length=text.get("max_position_embeddings", 77), vocab_size=text.get("vocab_size", 49408),
                classifier_free=page_defaults(cfg).classifier_free and not unet.get("time_cond_proj_dim"),
                guidance_embedding=bool(unet.get("time_cond_proj_dim")))


def page_defaults(cfg: Config) -> PageDefaults:
    """The model's steps, guidance and scheduler (manifest.json ``defaults``); whether it uses guidance at all."""
    src = source(cfg)
    return src.family.defaults if src.builtin else folder_layout(src.folder).defaults


def materialized(cfg: Config) -> bool:
    """True when the ``weights`` stage writes the model's folder (a registered family), False for a local folder."""
    return cfg.model.name in REGISTRY
