"""Compiled variants of one site (``webgpu.variants``): each extra kernel set is the site's config with that
``webgpu.kernels``, so its compile and link outputs go where Layout puts that kernel set's, under the same stage
fingerprints; the trace, weights, shards, verification and tokenizer stay the default build's, shared by every
variant. Variants are built at the default size only (the page runs other sizes with the default kernels).

The site lists each variant in its manifest (``variants``, fastest first) with what it requires of the adapter, and
the page picks the fastest one the adapter supports (web/src/variants.js).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from . import submodels
from .config import Config
from .errors import WebsdError
from .layout import Layout
from .webgpu import subgroup_matrix


def extra(cfg: Config) -> list[str]:
    """The kernel sets of ``webgpu.variants`` other than the one the site's own build uses."""
    out = [v for v in cfg.webgpu.variant_list if v != cfg.webgpu.kernels]
    if "subgroup-matrix" in (*out, cfg.webgpu.kernels) and cfg.model.dtype != "float16":
        raise WebsdError(f"webgpu subgroup-matrix kernels take float16 operands, and model.dtype is "
                         f"{cfg.model.dtype}: build with model.dtype=float16, or drop webgpu.variants")
    return out


def at_variant(cfg: Config, kernels: str) -> Config:
    """The site's config built with another kernel set: what that variant's stages run with."""
    return dataclasses.replace(cfg, webgpu=dataclasses.replace(cfg.webgpu, kernels=kernels, variants=""))


def overrides(kernels: str) -> dict[str, str]:
    """``at_variant`` as command-line config (a stage run in a child process)."""
    return {"webgpu.kernels": kernels, "webgpu.variants": ""}


def task_suffix(kernels: str) -> str:
    return kernels.replace("-", "_")


def requires(cfg: Config) -> dict:
    """What the adapter must offer to run the build of ``cfg`` (beyond the manifest's dtype and limits)."""
    if cfg.webgpu.kernels == "subgroup-matrix":
        return subgroup_matrix.PROFILES[cfg.webgpu.subgroup_matrix].requires()
    return {}


def site_files(cfg: Config) -> dict[str, Path]:
    """{path in the site's model/: build output} of every extra variant: each submodel's .wasm and, where the kernel
    set has them, its WGSL overrides."""
    files = {}
    for kernels in extra(cfg):
        layout = Layout.from_config(at_variant(cfg, kernels))
        for sub in submodels.names():
            files[f"variants/{kernels}/{sub}.wasm"] = layout.wasm_path(sub)
            if kernels == "subgroup-matrix":
                files[f"variants/{kernels}/{sub}.kernels.json"] = layout.kernel_overrides(sub)
    return files


def manifest_entries(cfg: Config) -> list[dict]:
    """The manifest's ``variants``: each extra kernel set with its requirements and files (web/src/variants.js)."""
    entries = []
    for kernels in extra(cfg):
        entry = {"name": kernels, "requires": requires(at_variant(cfg, kernels)), "submodels": {}}
        for sub in submodels.names():
            files = {"wasm": f"variants/{kernels}/{sub}.wasm"}
            if kernels == "subgroup-matrix":
                files["kernels"] = f"variants/{kernels}/{sub}.kernels.json"
            entry["submodels"][sub] = files
        entries.append(entry)
    return entries
