"""Stage ``site``: assemble the directory the browser loads (page + runtime bundle + model files + manifest).

Big files are hard-linked from the build outputs (copied across file systems), and the directory is swapped in
atomically, so a server never sees half a site. The manifest carries a sha256 per file so the page can refuse a
tampered or truncated shard with a clear message instead of drawing garbage.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import manifest, submodels
from .config import PROJECT_ROOT, Config
from .errors import WebsdError
from .fsutil import atomic_path, read_json, sha256_file, write_json
from .layout import Layout
from .tokenizer import TOKENIZER_FILES
from .tvmjs_runtime import bundle_path

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
    for sub in submodels.names():
        inputs[f"model/{sub}.wasm"] = layout.wasm_path(sub)
        params = layout.params_dir(sub)
        cache_json = params / "tensor-cache.json"
        inputs[f"model/params/{sub}/tensor-cache.json"] = cache_json
    for name in TOKENIZER_FILES:
        inputs[f"model/tokenizer/{name}"] = layout.model_dir / "tokenizer" / name
    return inputs


def assemble_site(cfg: Config, model_manifest: dict) -> Path:
    """Write ``cache/site`` and its ``model/manifest.json``; return the site directory."""
    import json

    layout = Layout.from_config(cfg)
    files = site_inputs(cfg)
    for sub in submodels.names():  # the shards named by each tensor cache
        params = layout.params_dir(sub)
        for record in json.loads((params / "tensor-cache.json").read_text())["records"]:
            files[f"model/params/{sub}/{record['dataPath']}"] = params / record["dataPath"]
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        hint = "run ./setup.sh (npm install in web/)" if "node_modules" in missing[0] else "run `doit` to build them"
        raise WebsdError(f"site input missing: {missing[0]}{f' (+{len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                         f"{hint}")
    manifest = dict(model_manifest)
    manifest["submodels"] = {sub: {"wasm": f"{sub}.wasm", "params": f"params/{sub}/", "function": sub}
                             for sub in submodels.names()}
    manifest["tokenizer"] = {name.split(".")[0]: f"tokenizer/{name}" for name in TOKENIZER_FILES}
    manifest["files"] = {name[len("model/"):]: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
                         for name, path in sorted(files.items()) if name.startswith("model/")}
    with atomic_path(layout.site_dir) as work:
        for name, path in files.items():
            _place(path, work / name)
        write_json(work / "model" / "manifest.json", manifest)
        # not for the page: each kernel's FLOPs and bytes, which a GPU profile turns into achieved rates
        write_json(work / "model" / "kernels.json", kernel_costs(cfg))
    return layout.site_dir


def site_deps(cfg: Config) -> list[Path]:
    """What the site stage reads: every file it places, and the compile descriptions the manifest's limits and
    ``model/kernels.json`` come from."""
    layout = Layout.from_config(cfg)
    return [*site_inputs(cfg).values(), *(layout.compile_json(sub) for sub in submodels.names())]


def kernel_costs(cfg: Config) -> dict:
    """Per submodel, per WebGPU kernel: FLOPs and argument bytes (pipeline.tvm_api.kernel_costs, via compile)."""
    layout = Layout.from_config(cfg)
    return {sub: read_json(layout.compile_json(sub), {}).get("webgpu", {}).get("kernel_costs", {})
            for sub in submodels.names()}


def manifest_path(cfg: Config) -> Path:
    return Layout.from_config(cfg).site_dir / "model" / "manifest.json"


def build_site(cfg: Config) -> Path:
    """Stage ``site``."""
    return assemble_site(cfg, manifest.model_manifest(cfg))
