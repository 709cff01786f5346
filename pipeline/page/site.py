"""Stage ``site``: assemble the directory the browser loads (page + runtime bundle + model files + manifest).

Big files are hard-linked from the build outputs (copied across file systems). Each build is a new version folder
(``cache/site-versions/<time>``) and ``cache/site`` is a symlink switched to it by one rename, so a server that
resolves ``cache/site`` per request never sees half a site, nor none. The manifest carries a sha256 per file so the page can refuse a
tampered or truncated shard with a clear message instead of drawing garbage.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import manifest
from .. import sizes, submodels, variants
from ..config import PROJECT_ROOT, Config
from ..errors import WebsdError
from ..fsutil import publish_versioned, read_json, sha256_file, versions_dir, write_json
from ..layout import TENSOR_CACHE_JSON, Layout
from .tokenizer import TOKENIZER_FILES
from ..toolchain.tvmjs_runtime import bundle_path

# the manifest lists the LoRAs, the VAE tile, the limits and the variants with their requirements
CONFIG_KEYS = ("model.lora", "model.vae_tile", "webgpu.limits", "webgpu.variants", "webgpu.subgroup_matrix")
WEB_DIR = PROJECT_ROOT / "web"
# what of web/ is the page (the rest is its tests and npm tooling)
PAGE_GLOBS = ("index.html", "style.css", "src/**/*.js")
# npm packages the page imports in the browser: site path -> file under web/node_modules
VENDOR = {"vendor/tokenizers.mjs": "@huggingface/tokenizers/dist/tokenizers.min.mjs"}


def page_files(web_dir: Path = WEB_DIR) -> dict[str, Path]:
    """The page's own files and its vendored npm modules, keyed by their path in the site."""
    files = {str(p.relative_to(web_dir)): p for pattern in PAGE_GLOBS for p in sorted(web_dir.glob(pattern))}
    files.update({name: web_dir / "node_modules" / module for name, module in VENDOR.items()})
    return files


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def site_inputs(cfg: Config) -> dict[str, Path]:
    """Every file the site is made of, keyed by its path inside the site."""
    layout = Layout.from_config(cfg)
    inputs = page_files()
    inputs["tvmjs.bundle.js"] = bundle_path(layout.tvmjs_dir)
    for i, (size, size_cfg) in enumerate(sizes.all_sizes(cfg)):  # one .wasm per submodel and size
        for sub, path in manifest.wasm_paths(size, default=i == 0).items():
            inputs.setdefault(f"model/{path}", Layout.from_config(size_cfg).wasm_path(sub))  # clip: the default's
    inputs.update({f"model/{path}": src for path, src in variants.site_files(cfg).items()})  # extra variants
    for sub in submodels.names():  # one set of weights for every size and variant
        inputs[f"model/params/{sub}/{TENSOR_CACHE_JSON}"] = layout.tensor_cache_index(sub)
    for name in TOKENIZER_FILES:
        inputs[f"model/tokenizer/{name}"] = layout.tokenizer_dir / name
    return inputs


def assemble_site(cfg: Config, model_manifest: dict) -> Path:
    """Write ``cache/site`` and its ``model/manifest.json``; return the site directory."""
    import json

    layout = Layout.from_config(cfg)
    files = site_inputs(cfg)
    for sub in submodels.names():  # the shards named by each tensor cache
        params = layout.params_dir(sub)
        for record in json.loads(layout.tensor_cache_index(sub).read_text())["records"]:
            files[f"model/params/{sub}/{record['dataPath']}"] = params / record["dataPath"]
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        hint = "run ./setup.sh (npm install in web/)" if "node_modules" in missing[0] else "run `doit` to build them"
        raise WebsdError(f"site input missing: {missing[0]}{f' (+{len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                         f"{hint}")
    check_shared_weights(cfg)
    manifest = dict(model_manifest)
    manifest["tokenizer"] = {name.split(".")[0]: f"tokenizer/{name}" for name in TOKENIZER_FILES}
    manifest["files"] = {name[len("model/"):]: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
                         for name, path in sorted(files.items()) if name.startswith("model/")}
    manifest["sizes"] = [{**size, "sha256": {sub: manifest["files"][path]["sha256"]
                                             for sub, path in size["wasm"].items()}} for size in manifest["sizes"]]
    with publish_versioned(layout.site_dir) as work:
        for name, path in files.items():
            _place(path, work / name)
        write_json(work / "model" / "manifest.json", manifest)
        # not for the page: each kernel's FLOPs and bytes, which a GPU profile turns into achieved rates
        write_json(work / "model" / "kernels.json", kernel_costs(cfg))
    return layout.site_dir


def _shared_weight_traces(cfg: Config) -> list[tuple[str, str, Path, Path]]:
    """(size, submodel, its trace's parameter list, the default size's) per extra size and image-sized submodel."""
    default = Layout.from_config(cfg)
    return [(size.name, sub, Layout.from_config(size_cfg).trace_params(sub), default.trace_params(sub))
            for size, size_cfg in sizes.all_sizes(cfg)[1:] for sub, rec in submodels.REGISTRY.items()
            if rec.image_sized]


def check_shared_weights(cfg: Config) -> None:
    """Every size's build takes the default size's weights: the same parameters in the same order (the traces say),
    else the shared shards would feed it the wrong tensors."""
    for size, sub, theirs, ours in _shared_weight_traces(cfg):
        theirs, ours = ([(p["name"], p["shape"]) for p in read_json(path, {}).get("params", [])]
                        for path in (theirs, ours))
        if theirs != ours:
            raise WebsdError(f"{sub} at {size} takes other parameters than at the default size, so it cannot share "
                             f"its weights; drop {size} from model.sizes")


def inputs(cfg: Config) -> list[Path]:
    """What the site stage reads: every file it places, the compile descriptions the manifest's limits and
    ``model/kernels.json`` come from, and the traces' parameter lists check_shared_weights compares."""
    traces = dict.fromkeys(p for *_, theirs, ours in _shared_weight_traces(cfg) for p in (theirs, ours))
    return [*site_inputs(cfg).values(), *(p for _, p in manifest.compile_descriptions(cfg)), *traces]


def kernel_costs(cfg: Config) -> dict:
    """Per submodel, per WebGPU kernel: FLOPs and argument bytes (pipeline.webgpu.inspection.kernel_costs, via compile)."""
    layout = Layout.from_config(cfg)
    return {sub: read_json(layout.compile_json(sub), {}).get("webgpu", {}).get("kernel_costs", {})
            for sub in submodels.names()}


def outputs(cfg: Config) -> list[Path]:
    return [Layout.from_config(cfg).site_dir / "model" / "manifest.json"]


def cleans(cfg: Config) -> list[Path]:
    site_dir = Layout.from_config(cfg).site_dir
    return [site_dir, versions_dir(site_dir)]


def run(cfg: Config) -> Path:
    """Stage ``site``."""
    return assemble_site(cfg, manifest.model_manifest(cfg))
