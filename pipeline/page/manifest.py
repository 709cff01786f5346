"""The model's part of the site's ``model/manifest.json``: sizes, scheduler config, dtype, and the WebGPU limits
the compiled kernels need (the page requests exactly those)."""
from __future__ import annotations

from pathlib import Path

from .. import models, sizes, submodels, variants
from ..config import Config
from ..errors import WebsdError
from ..fsutil import read_json
from ..layout import Layout
from ..model import lora
from ..submodels import vae_tiling


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
    d = models.dims(cfg)
    max_buffer, required, built_with = 0, {}, set()
    for sub, desc_path in compile_descriptions(cfg):  # the page requests limits once: the most any size needs
        built_with.add(read_json(desc_path, {}).get("tvm_version"))
        desc = read_json(desc_path, {}).get("webgpu")
        if desc is None or "required_limits" not in desc:
            raise WebsdError(f"{desc_path} is missing or predates the WebGPU limit checks; run compile_{sub} "
                             "before assembling the manifest")
        max_buffer = max(max_buffer, int(desc["max_buffer_bytes"]))
        for name, value in desc["required_limits"].items():
            required[name] = max(required.get(name, 0), int(value))
    src = models.source(cfg)
    defaults = models.page_defaults(cfg)
    return {
        "model": src.name if src.builtin else src.folder.name,
        # which TVM compiled it: the ref (tvm.version's tag by default) and what that TVM calls itself
        "tvm": {"ref": cfg.tvm.resolved_ref, "reports": sorted(v for v in built_with if v)},
        "seed": cfg.model.seed if src.builtin else None,  # the embedded models' weights are made from it
        "lora": lora.describe(cfg),  # fused into the weights at build time (pipeline.model.lora)
        "dtype": cfg.model.dtype,
        "width": d.width,
        "height": d.height,
        "latent_width": d.latent_width,
        "latent_height": d.latent_height,
        "latent_channels": d.latent_channels,
        "text_hidden": d.text_hidden,
        "max_length": d.max_length,
        "submodels": {sub: {"wasm": f"{sub}.wasm", "params": f"params/{sub}/", "function": sub}
                      for sub in submodels.REGISTRY},
        # every size the page offers (model.sizes), the default first: its own .wasm of each image-sized submodel
        # (the site adds each one's sha256), the same weights; the fields above are the default size's
        "default_size": sizes.default(cfg).name,
        "sizes": [_size_entry(size, size_cfg, default=i == 0)
                  for i, (size, size_cfg) in enumerate(sizes.all_sizes(cfg))],
        "scheduler": _json_safe(models.scheduler_config(cfg)),
        # the page's starting steps, guidance and scheduler; classifier_free False: clip and unet take the prompt
        # alone (batch 1) and the unet no guidance_scale (pipeline.submodels.unet)
        "defaults": {"steps": defaults.steps, "guidance": defaults.guidance, "scheduler": defaults.scheduler},
        "classifier_free": d.classifier_free,
        # the unet takes the guidance scale as an embedding (LCM): batch 1 with a guidance_scale input
        "guidance_embedding": d.guidance_embedding,
        "requires_f16": cfg.model.dtype == "float16",
        # the VAE decodes tiles of this many pixels (diffusers' enable_tiling with tile_sample_min_size = it), null:
        # untiled; a reference (pipeline.page.reference) decodes with the same tiling
        "vae_tile": vae_tiling.resolve(cfg) or None,
        "max_buffer_bytes": max_buffer,
        # what the kernels need of the browser (pipeline.webgpu.limits): the page requests exactly these
        "limits_profile": cfg.webgpu.limits,
        "required_limits": required,
        # more compiled variants (webgpu.variants), fastest first, each with what it requires of the adapter; the
        # page picks the first the adapter supports, else the files above (pipeline.variants, web/src/variants.js)
        **({"variants": variants.manifest_entries(cfg)} if variants.extra(cfg) else {}),
        # the kernel set of the files above (pipeline.variants): what they require beyond dtype and limits
        "kernels": cfg.webgpu.kernels,
        **({"requires": variants.requires(cfg)} if variants.requires(cfg) else {}),
    }


def wasm_paths(size: sizes.Size, default: bool) -> dict[str, str]:
    """Each submodel's .wasm at ``size``, as a path in the site's model/: the default size's at the top, an extra
    size's image-sized submodels under sizes/<name>/."""
    return {sub: f"{sub}.wasm" if default or not s.image_sized else f"sizes/{size.name}/{sub}.wasm"
            for sub, s in submodels.REGISTRY.items()}


def compile_descriptions(cfg: Config) -> list[tuple[str, Path]]:
    """(submodel, its compile description's path) of every build in the site: each submodel at the default size,
    the image-sized ones at each extra size, each submodel of each extra variant."""
    out = []
    for i, (size, size_cfg) in enumerate(sizes.all_sizes(cfg)):
        layout = Layout.from_config(size_cfg)
        out += [(sub, layout.compile_json(sub)) for sub, s in submodels.REGISTRY.items() if i == 0 or s.image_sized]
    for kernels in variants.extra(cfg):
        layout = Layout.from_config(variants.at_variant(cfg, kernels))
        out += [(sub, layout.compile_json(sub)) for sub in submodels.REGISTRY]
    return out


def _size_entry(size: sizes.Size, size_cfg: Config, default: bool) -> dict:
    d = models.dims(size_cfg)
    return {"name": size.name, "width": d.width, "height": d.height, "latent_width": d.latent_width,
            "latent_height": d.latent_height, "vae_tile": vae_tiling.resolve(size_cfg) or None,
            "wasm": wasm_paths(size, default)}
