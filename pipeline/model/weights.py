"""Stage ``weights``: a registered model family (tiny, sd15-random) materialized as a diffusers folder with random
weights from ``model.seed`` (pipeline.model.hf); a local folder is used as it is and nothing is written."""
from __future__ import annotations

from pathlib import Path

from .. import models
from ..config import Config
from . import hf

CONFIG_KEYS = ("model.seed",)


def outputs(cfg: Config) -> list[Path]:
    if not models.materialized(cfg):
        return []
    files = [p for component in models.COMPONENTS for p in hf.weight_files(cfg, component)]
    return [*files, models.weights_dir(cfg) / hf.STAMP]


def cleans(cfg: Config) -> list[Path]:
    return [models.weights_dir(cfg)] if models.materialized(cfg) else []


def run(cfg: Config) -> Path:
    return hf.materialize(cfg)
