"""``model.lora``: LoRA files fused into the model's weights at build time (diffusers' own loader and fuse).

Syntax: comma-separated ``path[:scale]`` items, e.g. ``model.lora=style.safetensors:0.8,detail.safetensors`` (scale
1.0 when left out; a relative path is relative to the project root). Any format diffusers'
``StableDiffusionPipeline.load_lora_weights`` reads (diffusers/peft, kohya-ss, A1111) works, as ``.safetensors`` or
``.bin``. A LoRA for SD v1.x touches the text encoder and the UNet, never the VAE.

A fused LoRA changes weight values only, never a graph: the trace's parameter list stays the same, so a LoRA change
re-runs ``shard`` and ``verify`` of the text encoder and the UNet (their inputs hold the LoRA files, their
fingerprint the scales) and not trace, compile or link. Every stage that loads weights loads them through
``pipeline.model.hf.load_component``, which calls ``fuse`` here, so the shards and verify's PyTorch reference hold
the same fused weights. Standard library at import (dodo.py parses the setting when it loads).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import PROJECT_ROOT, Config
from ..errors import WebsdError

# the diffusers folder components a Stable Diffusion v1.x LoRA can hold weights for (diffusers'
# StableDiffusionLoraLoaderMixin._lora_loadable_modules)
COMPONENTS = ("text_encoder", "unet")


@dataclass(frozen=True)
class Lora:
    path: Path
    scale: float


def _item(text: str) -> Lora:
    path, sep, scale = text.rpartition(":")
    if sep:
        try:
            value = float(scale)
        except ValueError:  # a colon inside the path, no scale
            path, value = text, 1.0
    else:
        path, value = text, 1.0
    if not path:
        raise WebsdError(f"config model.lora: {text!r} has no file; write path[:scale], e.g. style.safetensors:0.8")
    full = Path(path).expanduser()
    return Lora(full if full.is_absolute() else PROJECT_ROOT / full, value)


def parse(cfg: Config) -> list[Lora]:
    """The configured LoRAs in order (empty when none); a missing file is a one-line error."""
    loras = [_item(t.strip()) for t in cfg.model.lora.split(",") if t.strip()]
    for lora in loras:
        if not lora.path.is_file():
            raise WebsdError(f"config model.lora: {lora.path} is not a file; give the path of a LoRA "
                             ".safetensors (path[:scale], comma-separated)")
    return loras


def applies(component: str) -> bool:
    return component in COMPONENTS


def files(cfg: Config, component: str) -> list[Path]:
    """The LoRA files a component's weights depend on (stage inputs: a changed file re-shards)."""
    return [lora.path for lora in parse(cfg)] if applies(component) else []


def settings(cfg: Config, component: str) -> list[list]:
    """``[[path, scale], ...]`` for a component (a stage fingerprint: a changed scale re-shards)."""
    return [[str(lora.path), lora.scale] for lora in parse(cfg)] if applies(component) else []


def describe(cfg: Config) -> list[dict]:
    """The LoRAs as the manifest lists them: file name and scale."""
    return [{"file": lora.path.name, "scale": lora.scale} for lora in parse(cfg)]


def _state_dict(lora: Lora):
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    try:
        state, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
            str(lora.path), return_lora_metadata=True)
    except Exception as e:  # noqa: BLE001 - loaders raise OSError, SafetensorError, ValueError, KeyError, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise WebsdError(f"cannot read LoRA {lora.path} ({type(e).__name__}: {first}); give a LoRA file "
                         "diffusers' load_lora_weights reads") from None
    matched = [c for c in COMPONENTS if any(k.startswith(f"{c}.") for k in state)]
    if not state or not all("lora" in k for k in state) or not matched:
        raise WebsdError(f"LoRA {lora.path} has no LoRA weights for the text encoder or the UNet (keys like "
                         f"{next(iter(state), 'none')!r}); give a Stable Diffusion v1.x LoRA")
    return state, alphas, metadata


def fuse(cfg: Config, component: str, model):
    """Fuse the configured LoRAs into ``model`` (the component as loaded, float32) with their scales, as
    ``load_lora_weights`` + ``set_adapters`` + ``fuse_lora`` + ``unload_lora_weights`` do on a pipeline; returns
    it as a plain module again (no LoRA layers: the same parameter names as without LoRA)."""
    loras = parse(cfg)
    if not loras or not applies(component):
        return model
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    class Holder(StableDiffusionLoraLoaderMixin):
        """The pipeline's LoRA methods over the one component this process loaded."""

    holder = Holder()
    holder._merged_adapters = set()
    setattr(holder, component, model)
    names = []
    for index, lora in enumerate(loras):
        state, alphas, metadata = _state_dict(lora)
        if not any(k.startswith(f"{component}.") for k in state):
            continue  # this LoRA changes the other component only
        name = f"websd_lora_{index}"
        load = (holder.load_lora_into_unet if component == "unet" else holder.load_lora_into_text_encoder)
        try:
            load(state, alphas, model, adapter_name=name, metadata=metadata)
        except Exception as e:  # noqa: BLE001 - peft: no matching target module, shape mismatch, ...
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise WebsdError(f"LoRA {lora.path} does not fit this model's {component} ({type(e).__name__}: "
                             f"{first}); give a LoRA trained for {cfg.model.name}") from None
        names.append((name, lora.scale))
    if not names:
        return model
    holder.set_adapters([n for n, _ in names], adapter_weights=[s for _, s in names])
    holder.fuse_lora(components=[component], lora_scale=1.0, adapter_names=[n for n, _ in names])
    holder.unload_lora_weights()
    return model
