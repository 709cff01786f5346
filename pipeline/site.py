"""Stage ``site``: assemble the directory the browser loads (page + runtime bundle + model files + manifest).

Big files are hard-linked from the build outputs (copied across file systems), and the directory is swapped in
atomically, so a server never sees half a site. The manifest carries a sha256 per file so the page can refuse a
tampered or truncated shard with a clear message instead of drawing garbage.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .config import PROJECT_ROOT, Config
from .fsutil import atomic_path, sha256_file, write_json
from .layout import SUBMODELS, Layout

WEB_DIR = PROJECT_ROOT / "web"
# what of web/ is the page (the rest is its tests and npm tooling)
_WEB_SKIP = {"node_modules", "test", "package.json", "package-lock.json"}


def page_files(web_dir: Path = WEB_DIR) -> list[Path]:
    files = []
    for path in sorted(web_dir.rglob("*")):
        rel = path.relative_to(web_dir)
        if path.is_file() and not (set(rel.parts) & _WEB_SKIP) and not rel.name.startswith("."):
            files.append(path)
    return files


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def site_inputs(cfg: Config) -> dict[str, Path]:
    """Every file the site is made of, keyed by its path inside the site."""
    from .tvmjs_runtime import bundle_path

    layout = Layout.from_config(cfg)
    inputs = {str(p.relative_to(WEB_DIR)): p for p in page_files()}
    inputs["tvmjs.bundle.js"] = bundle_path(layout.tvmjs_dir)
    for sub in SUBMODELS:
        inputs[f"model/{sub}.wasm"] = layout.wasm_path(sub)
        params = layout.params_dir(sub)
        cache_json = params / "tensor-cache.json"
        inputs[f"model/params/{sub}/tensor-cache.json"] = cache_json
    for name in ("vocab.json", "merges.txt"):
        inputs[f"model/tokenizer/{name}"] = layout.model_dir / "tokenizer" / name
    return inputs


def assemble_site(cfg: Config, model_manifest: dict) -> Path:
    """Write ``cache/site`` and its ``model/manifest.json``; return the site directory."""
    import json

    layout = Layout.from_config(cfg)
    files = site_inputs(cfg)
    for sub in SUBMODELS:  # the shards named by each tensor cache
        params = layout.params_dir(sub)
        for record in json.loads((params / "tensor-cache.json").read_text())["records"]:
            files[f"model/params/{sub}/{record['dataPath']}"] = params / record["dataPath"]
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        from .errors import WebsdError

        raise WebsdError(f"site inputs missing ({missing[0]}{' ...' if len(missing) > 1 else ''}): run `doit` to build them")
    manifest = dict(model_manifest)
    manifest["submodels"] = {sub: {"wasm": f"{sub}.wasm", "params": f"params/{sub}/", "function": sub}
                             for sub in SUBMODELS}
    manifest["tokenizer"] = {"vocab": "tokenizer/vocab.json", "merges": "tokenizer/merges.txt"}
    manifest["files"] = {name[len("model/"):]: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
                         for name, path in sorted(files.items()) if name.startswith("model/")}
    with atomic_path(layout.site_dir) as work:
        for name, path in files.items():
            _place(path, work / name)
        write_json(work / "model" / "manifest.json", manifest)
    return layout.site_dir


def write_tokenizer(cfg: Config) -> Path:
    """The CLIP tokenizer files the page loads: a local model's own, else built offline from open-clip's vocab."""
    from . import models
    from .tokenizer import write_clip_tokenizer

    out = Layout.from_config(cfg).model_dir / "tokenizer"
    if models.materialized(cfg):
        write_clip_tokenizer(out)
    else:
        src = Path(cfg.model.name).expanduser() / "tokenizer"
        with atomic_path(out) as work:
            work.mkdir()
            for name in ("vocab.json", "merges.txt"):
                if not (src / name).exists():
                    from .errors import WebsdError

                    raise WebsdError(f"{src / name} missing: a diffusers folder needs tokenizer/{name}")
                shutil.copy2(src / name, work / name)
    return out
