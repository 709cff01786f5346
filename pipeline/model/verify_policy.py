"""Which models are verified on the CPU (``model.verify``): the llvm build and the ``verify_*`` stages."""
from __future__ import annotations

from .. import models
from ..config import Config


def cpu_verification(cfg: Config) -> bool:
    """Whether the pipeline builds the llvm (CPU) module and the verify_* tasks (``model.verify``; see config.py)."""
    if cfg.model.verify != "auto":
        return cfg.model.verify == "on"
    family = models.REGISTRY.get(cfg.model.name)
    return family is not None and family.cpu_verify
