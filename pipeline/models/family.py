"""The typed entry of the model-family registry: every field the stages read, the defaults written once here."""
from __future__ import annotations

from dataclasses import dataclass, field

from .schedules import SD1_SCHEDULER


@dataclass(frozen=True)
class PageDefaults:
    """What the page starts with (manifest.json ``defaults``): the model's own steps, guidance and scheduler.

    ``guidance`` <= 1 means no classifier-free guidance: the UNet is traced and compiled at batch 1 (the prompt
    alone, no negative prompt) and runs once per step; above 1 it runs on [negative, prompt] inside one call, unless
    the UNet embeds the guidance scale itself (LCM's ``time_cond_proj_dim``: batch 1 with the scale as an input)."""

    steps: int = 20
    guidance: float = 7.5
    scheduler: str = "dpm++2m"  # a key of web/src/schedulers/index.js SCHEDULERS

    @property
    def classifier_free(self) -> bool:
        return self.guidance > 1


@dataclass(frozen=True)
class TokenizerSettings:
    """What differs between the CLIP tokenizers of SD versions (their tokenizer_config.json): SD 1.x pads the 77
    ids with the end-of-text token, SD 2.x (OpenCLIP) with "!" (id 0)."""

    pad_token: str = "<|endoftext|>"
    max_length: int = 77


@dataclass(frozen=True)
class ModelFamily:
    """A registered family: diffusers configs written out, built with random weights from ``model.seed``."""

    module: str  # the entry module that defines it (its code is a dependency of the stages that build it)
    components: dict[str, tuple[str, dict]]  # diffusers folder component -> (class path, config)
    scheduler: tuple[str, dict] = SD1_SCHEDULER  # (class path, config)
    cpu_verify: bool = False  # small enough for the llvm (CPU) build: a plain `doit` verifies it (verify_policy)
    defaults: PageDefaults = field(default_factory=PageDefaults)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
