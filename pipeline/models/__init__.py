"""The model registry: which Stable Diffusion weights the pipeline builds (``model.name``).

A name is either a registered family (a module here with ``COMPONENTS`` and ``SCHEDULER`` config dicts, built with
random weights from ``model.seed``) or the path of a local diffusers folder (``text_encoder/``, ``unet/``,
``vae/``, ``scheduler/``). Adding a family is one module plus one ``REGISTRY`` line.

Registered families are materialized once as a diffusers folder in the cache (stage ``weights``), so every later
stage reads model weights from files whose change doit can detect, whatever the model's origin.

Only the standard library is imported at module level; torch/diffusers/transformers load inside functions.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..config import Config
from ..errors import WebsdError
from ..fsutil import atomic_path, write_json
from ..layout import Layout
from . import sd15_random, tiny
from .schedules import SD1_SCHEDULER

REGISTRY: dict[str, ModuleType] = {
    "tiny": tiny,
    "sd15-random": sd15_random,
}

# diffusers folder components the pipeline reads (the tokenizer comes from pipeline.tokenizer)
COMPONENTS = ("text_encoder", "unet", "vae")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
STAMP = "websd-weights.json"


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


def model_code_files(cfg: Config) -> list[Path]:
    """Source files that define a registered family's weights (file deps of the ``weights`` stage)."""
    here = Path(__file__).resolve().parent
    files = [here / "__init__.py"]
    family = REGISTRY.get(cfg.model.name)
    if family is not None:
        files += [Path(family.__file__).resolve(), here / "schedules.py"]
    return files


# the file save_pretrained writes for a component's weights (single file: see materialize's max_shard_size)
_WEIGHT_FILE = {"transformers": "model.safetensors", "diffusers": "diffusion_pytorch_model.safetensors"}


def weight_files(cfg: Config, sub: str) -> list[Path]:
    """The files submodel ``sub`` loads (config + weights): file dependencies of its trace stage.

    For a registered family these are the files the ``weights`` stage will write (known before it runs)."""
    from ..submodels import get as get_submodel

    component = get_submodel(sub).COMPONENT
    src = source(cfg)
    folder = src.folder / component
    if src.builtin:
        library = src.family.COMPONENTS[component][0].split(".", 1)[0]
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
    src = source(cfg)
    if not src.builtin:
        return src.folder
    import torch

    _quiet_hf()
    with atomic_path(src.folder) as work:
        for index, (component, (cls_path, conf)) in enumerate(src.family.COMPONENTS.items()):
            cls = _import_class(cls_path)
            torch.manual_seed(cfg.model.seed + index)
            if cls_path.startswith("transformers."):
                model = cls(cls.config_class(**conf))
            else:
                model = cls.from_config(conf)
            # one weights file per component, so weight_files() can name it before it exists
            model.eval().save_pretrained(work / component, safe_serialization=True, max_shard_size="1000GB")
            del model
        sched_cls, sched_conf = src.family.SCHEDULER
        _import_class(sched_cls).from_config(sched_conf).save_pretrained(work / "scheduler")
        write_json(work / STAMP, {"model": src.name, "seed": cfg.model.seed})
    return src.folder


def load_component(cfg: Config, component: str):
    """A component as a float32 torch module in eval mode, from the (materialized) diffusers folder."""
    src = source(cfg)
    folder = src.folder / component
    if not (folder / "config.json").is_file():
        hint = "run the weights stage first" if src.builtin else "the model folder is incomplete"
        raise WebsdError(f"{folder / 'config.json'} is missing; {hint}")
    import torch

    _quiet_hf()
    cls_path = (src.family.COMPONENTS[component][0] if src.builtin else
                {"text_encoder": "transformers.CLIPTextModel", "unet": "diffusers.UNet2DConditionModel",
                 "vae": "diffusers.AutoencoderKL"}[component])
    cls = _import_class(cls_path)
    kwargs = {"local_files_only": True}
    if cls_path.startswith("transformers."):
        # eager attention: the fused SDPA kernel decomposes into WGSL that validators reject
        kwargs.update(dtype=torch.float32, attn_implementation="eager")
    else:
        kwargs.update(torch_dtype=torch.float32)
    try:
        model = cls.from_pretrained(str(folder), **kwargs)
    except Exception as e:  # noqa: BLE001 - loaders raise OSError, SafetensorError, ValueError, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        hint = "delete it and re-run the weights stage" if src.builtin else "repair or re-download that folder"
        raise WebsdError(f"cannot load {component} weights from {folder} ({type(e).__name__}: {first}); "
                         f"{hint}") from None
    return model.float().eval()


def _json_safe(value):
    """Non-finite floats (e.g. DPMSolver's lambda_min_clipped = -inf) become None: JSON.parse rejects them."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def model_manifest(cfg: Config) -> dict:
    """The model's part of ``model/manifest.json`` (the site stage adds the tokenizer entry).

    Reads only JSON (configs and the WebGPU compile descriptions), so it needs the compile stages' outputs
    (``<sub>.json``) but no torch/TVM.
    """
    from .. import compile as compile_stage
    from ..fsutil import read_json
    from ..submodels import REGISTRY as SUBMODELS

    d = dims(cfg)
    max_buffer, required = 0, {}
    for sub in SUBMODELS:
        desc_path = compile_stage.paths(cfg, sub)["json"]
        desc = read_json(desc_path, {}).get("webgpu")
        if desc is None or "required_limits" not in desc:
            raise WebsdError(f"{desc_path} is missing or predates the WebGPU limit checks; run compile_{sub} "
                             "before assembling the manifest")
        max_buffer = max(max_buffer, int(desc["max_buffer_bytes"]))
        for name, value in desc["required_limits"].items():
            required[name] = max(required.get(name, 0), int(value))
    src = source(cfg)
    return {
        "model": src.name if src.builtin else src.folder.name,
        "seed": cfg.model.seed if src.builtin else None,  # the embedded models' weights are made from it
        "dtype": cfg.model.dtype,
        "image_size": d.image_size,
        "latent_size": d.latent_size,
        "latent_channels": d.latent_channels,
        "text_hidden": d.text_hidden,
        "max_length": d.max_length,
        "submodels": {sub: {"wasm": f"{sub}.wasm", "params": f"params/{sub}/", "function": sub}
                      for sub in SUBMODELS},
        "scheduler": _json_safe(scheduler_config(cfg)),
        "requires_f16": cfg.model.dtype == "float16",
        "max_buffer_bytes": max_buffer,
        # what the kernels need of the browser (pipeline.webgpu_limits): the page requests exactly these
        "limits_profile": cfg.webgpu.limits,
        "required_limits": required,
    }


def cpu_verification(cfg: Config) -> bool:
    """Whether the pipeline builds the llvm (CPU) module and the verify_* tasks (``model.verify``; see config.py)."""
    if cfg.model.verify != "auto":
        return cfg.model.verify == "on"
    family = REGISTRY.get(cfg.model.name)
    return bool(family is not None and getattr(family, "CPU_VERIFY", False))
