"""Hugging Face loading: the diffusers folder of a model (``weights`` stage) and its components as torch modules.

Registered families are materialized as a diffusers folder with random weights from ``model.seed``; a local
folder is used as it is. Every stage that needs weights loads them here, from files doit tracks.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .. import models
from ..config import Config
from ..errors import WebsdError
from ..fsutil import atomic_path, write_json

WEIGHT_SUFFIXES = (".safetensors", ".bin")
STAMP = "websd-weights.json"
# the component class a local folder's component is loaded with
LOCAL_CLASSES = {"text_encoder": "transformers.CLIPTextModel", "unet": "diffusers.UNet2DConditionModel",
                 "vae": "diffusers.AutoencoderKL"}

# the file save_pretrained writes for a component's weights (single file: see materialize's max_shard_size)
_WEIGHT_FILE = {"transformers": "model.safetensors", "diffusers": "diffusion_pytorch_model.safetensors"}


def weight_files(cfg: Config, component: str) -> list[Path]:
    """The files of a model component (config + weights): what loading it reads.

    For a registered family these are the files the ``weights`` stage will write (known before it runs)."""
    src = models.source(cfg)
    folder = src.folder / component
    if src.builtin:
        library = src.family.components[component][0].split(".", 1)[0]
        return [folder / "config.json", folder / _WEIGHT_FILE[library]]
    return sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES
                  or p.name.endswith(".index.json"))


def _import_class(dotted: str):
    module, _, cls = dotted.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def _quiet_hf() -> None:
    """Progress bars and advice (e.g. 'install accelerate') would bury a stage's one-line result."""
    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def materialize(cfg: Config) -> Path:
    """Stage ``weights``: write a registered family's random-weight diffusers folder (safetensors).

    Each component is seeded with ``model.seed`` + its index, so the files are the same on every machine.
    For a local folder nothing is written; it is only checked.
    """
    src = models.source(cfg)
    if not src.builtin:
        return src.folder
    import torch

    _quiet_hf()
    with atomic_path(src.folder) as work:
        for index, (component, (cls_path, conf)) in enumerate(src.family.components.items()):
            cls = _import_class(cls_path)
            torch.manual_seed(cfg.model.seed + index)
            if cls_path.startswith("transformers."):
                model = cls(cls.config_class(**conf))
            else:
                model = cls.from_config(conf)
            # one weights file per component, so weight_files() can name it before it exists
            model.eval().save_pretrained(work / component, safe_serialization=True, max_shard_size="1000GB")
            del model
        sched_cls, sched_conf = src.family.scheduler
        _import_class(sched_cls).from_config(sched_conf).save_pretrained(work / "scheduler")
        write_json(work / STAMP, {"model": src.name, "seed": cfg.model.seed})
    return src.folder


def load_component(cfg: Config, component: str, attn_implementation: str = "eager"):
    """A component as a float32 torch module in eval mode, from the (materialized) diffusers folder; a transformers
    one with ``attn_implementation`` (the clip wrapper gives pipeline.submodels.attention's)."""
    src = models.source(cfg)
    folder = src.folder / component
    if not (folder / "config.json").is_file():
        hint = "run the weights stage first" if src.builtin else "the model folder is incomplete"
        raise WebsdError(f"{folder / 'config.json'} is missing; {hint}")
    import torch

    _quiet_hf()
    cls_path = src.family.components[component][0] if src.builtin else LOCAL_CLASSES[component]
    cls = _import_class(cls_path)
    kwargs = {"local_files_only": True}
    if cls_path.startswith("transformers."):
        # not "sdpa": torch's SDPA decomposes into WGSL that validators reject
        kwargs.update(dtype=torch.float32, attn_implementation=attn_implementation)
    else:
        kwargs.update(torch_dtype=torch.float32)
    try:
        model = cls.from_pretrained(str(folder), **kwargs)
    except Exception as e:  # noqa: BLE001 - loaders raise OSError, SafetensorError, ValueError, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        hint = "delete it and re-run the weights stage" if src.builtin else "repair or re-download that folder"
        raise WebsdError(f"cannot load {component} weights from {folder} ({type(e).__name__}: {first}); "
                         f"{hint}") from None
    from . import lora

    return lora.fuse(cfg, component, model.float().eval())
