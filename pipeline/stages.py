"""The one stage table: each stage of the build declares itself here as a ``Stage`` record.

A record says what the stage is called, whether it runs once per submodel, what it reads (``inputs``) and writes
(``outputs``), which config keys it reads beyond those, whether it runs TVM, and the function that runs it.
dodo.py turns records into doit tasks and ``python -m pipeline.run_stage`` runs them; nothing else knows stages.

A stage's code is derived, not listed: it is the import closure, inside ``pipeline/``, of the module that holds
its run function (``code_files``), every import counted, those inside functions too. One refinement keeps it
exact: a registry package (``pipeline.submodels``, ``pipeline.models``) maps names to entry modules and a stage
calls only the entry its config selects, so the other entries are left out (an edit of the VAE wrapper does not
make ``trace_unet`` stale; an edit of ``sd15_random.py`` does not make a tiny build stale; an edit of the TVM v0.21
API adapter does not make a v0.26 build stale).
"""
from __future__ import annotations

import ast
import atexit
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from . import (compile, gpu_run, hf, models, serve, shard, site, submodels, tokenizer, trace, tvm_build,
               tvm_checkout, tvm_versions, tvmjs_runtime, verify, verify_policy, wasm_link)
from .config import Config
from .fsutil import atomic_write
from .layout import Layout

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
REGISTRIES = {"pipeline.submodels": submodels.REGISTRY, "pipeline.models": models.REGISTRY,
              "pipeline.tvm_versions": tvm_versions.REGISTRY}


def _none(cfg: Config, sub: str | None = None) -> list[Path]:
    return []


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str
    run: Callable  # run(cfg) or, per submodel, run(cfg, sub)
    per_submodel: bool = False
    inputs: Callable = _none  # files read: a change of their content makes the stage stale; producers run first
    outputs: Callable = _none  # files written (the last one last): a missing one makes the stage stale
    config_keys: tuple[str, ...] = ()  # config read beyond its inputs, other than the keys in the output paths
    runs_tvm: bool = False  # imports the TVM tvm_build selected: stale when that selection changes
    after: tuple[str, ...] = ()  # stages to run first although nothing they write is read
    fingerprint: Callable | None = None  # cfg -> a value; stale when it changes (e.g. TVM source trees)
    in_process: bool = False  # run inside doit's process (light stages); else a child process
    shared_outputs: bool = False  # outputs at one path for every config (the site): path keys count as config
    default: Callable = lambda cfg: True  # part of a plain `doit`
    always: bool = False  # never up to date (serve, gpu_run)
    expensive: bool = False  # `doit clean` keeps its outputs unless the task is named
    cleans: Callable | None = None  # what clean removes (default: outputs)

    def task_name(self, sub: str | None = None) -> str:
        return f"{self.name}_{sub}" if self.per_submodel else self.name

    def subs(self) -> tuple:
        return submodels.names() if self.per_submodel else (None,)


def _layout(cfg: Config) -> Layout:
    return Layout.from_config(cfg)


def _component(sub: str) -> str:
    return submodels.get(sub).COMPONENT


def _weights_outputs(cfg: Config, sub=None) -> list[Path]:
    if not models.materialized(cfg):
        return []
    files = [p for s in submodels.names() for p in hf.weight_files(cfg, _component(s))]
    return [*files, models.weights_dir(cfg) / hf.STAMP]


def _tokenizer_dir(cfg: Config) -> Path:
    return _layout(cfg).model_dir / "tokenizer"


STAGES: tuple[Stage, ...] = (
    Stage("tvm_checkout", "Check out Apache TVM at tvm.ref (tvm.git or tvm.mirror) with its submodules and backports",
          tvm_checkout.checkout_tvm, in_process=True, expensive=True,
          outputs=lambda cfg, sub=None: [_layout(cfg).tvm_checkout_stamp],
          inputs=lambda cfg, sub=None: tvm_checkout.patch_files(cfg.tvm.version),
          config_keys=("tvm.version", "tvm.ref", "tvm.git", "tvm.mirror", "tvm.ffi_mirror",
                       "tvm.submodule_mirrors"),
          fingerprint=lambda cfg: (_layout(cfg).tvm_src / ".git").exists(),
          cleans=lambda cfg: [_layout(cfg).tvm_src, _layout(cfg).tvm_checkout_stamp]),
    Stage("tvm_build", "Select the TVM later stages use: the apache-tvm wheel, or a cmake/ninja build (tvm.build)",
          tvm_build.run_stage, in_process=True, expensive=True,
          outputs=lambda cfg, sub=None: [_layout(cfg).tvm_build_stamp], after=("tvm_checkout",),
          config_keys=("tvm.build", "tvm.llvm_config", "tvm.version", "tvm.build_jobs"),
          fingerprint=tvm_build.build_inputs,
          cleans=lambda cfg: [_layout(cfg).tvm_build_dir, _layout(cfg).tvm_build_stamp]),
    Stage("tvmjs_runtime", "Build TVM's web runtime with emscripten (wasm objects, JS glue, tvmjs.bundle.js)",
          tvmjs_runtime.run_stage, in_process=True, expensive=True, after=("tvm_checkout",),
          outputs=lambda cfg, sub=None: [tvmjs_runtime.runtime_stamp(_layout(cfg).tvmjs_dir)],
          fingerprint=lambda cfg: tvm_checkout.source_fingerprint(_layout(cfg).tvm_src, tvmjs_runtime.RUNTIME_PATHS),
          cleans=lambda cfg: [_layout(cfg).tvmjs_dir]),
    Stage("weights", "Materialize the embedded model (tiny / sd15-random) as a diffusers folder",
          hf.materialize, outputs=_weights_outputs, config_keys=("model.seed",),
          cleans=lambda cfg: [models.weights_dir(cfg)] if models.materialized(cfg) else []),
    Stage("trace", "torch.export the submodel's wrapper (the graph; no TVM involved)", trace.trace,
          per_submodel=True, inputs=trace.file_deps, outputs=trace.targets),
    Stage("compile", "Import the trace into TVM Relax and build it for WebGPU (and llvm when verified)",
          compile.compile_submodel, per_submodel=True, runs_tvm=True,
          inputs=compile.file_deps, outputs=compile.targets, config_keys=compile.CONFIG_KEYS),
    Stage("link", "Link the compiled submodel with the tvmjs runtime objects into the .wasm the page loads",
          wasm_link.link_stage, per_submodel=True, inputs=wasm_link.stage_inputs,
          outputs=lambda cfg, sub: [_layout(cfg).wasm_path(sub)], config_keys=("link.profile",)),
    Stage("shard", "Write the submodel's weights as a tvmjs tensor cache (32 MB shards)", shard.shard,
          per_submodel=True, after=("tvm_build",), outputs=shard.targets,
          cleans=lambda cfg, sub: [_layout(cfg).params_dir(sub)],
          inputs=lambda cfg, sub: [_layout(cfg).trace_params(sub), *hf.weight_files(cfg, _component(sub))]),
    Stage("verify", "Check the TVM llvm build against PyTorch on the same inputs", verify.verify,
          per_submodel=True, runs_tvm=True, outputs=verify.targets, config_keys=verify.CONFIG_KEYS,
          default=verify_policy.cpu_verification,
          inputs=lambda cfg, sub: [_layout(cfg).trace_params(sub), compile.paths(cfg, sub)["llvm"],
                                   *shard.targets(cfg, sub), *hf.weight_files(cfg, _component(sub))]),
    Stage("tokenizer", "Write the CLIP tokenizer files the page tokenizes with", tokenizer.tokenizer_stage,
          inputs=lambda cfg, sub=None: tokenizer.source_files(cfg),
          outputs=lambda cfg, sub=None: [_tokenizer_dir(cfg) / n for n in tokenizer.TOKENIZER_FILES]),
    Stage("site", "Assemble the site: page, tvmjs.bundle.js, each .wasm and tensor cache, manifest.json",
          site.build_site, in_process=True, inputs=lambda cfg, sub=None: site.site_deps(cfg),
          outputs=lambda cfg, sub=None: [site.manifest_path(cfg)], cleans=lambda cfg: [_layout(cfg).site_dir],
          shared_outputs=True, config_keys=("model.name", "model.dtype", "model.image_size", "tvm.version", "tvm.ref")),
    Stage("serve", "Serve the last complete site on web.host:web.port (127.0.0.1:8000)", serve.serve_stage,
          in_process=True, always=True, default=lambda cfg: False),
    Stage("gpu_run", "Run the site headless on this machine's GPU (Dawn): timings and image", gpu_run.run_stage,
          in_process=True, always=True, default=lambda cfg: False, after=("site",)),
)
BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    from .errors import WebsdError

    if name not in BY_NAME:
        raise WebsdError(f"unknown stage {name!r}; choose one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


# --- code dependencies ------------------------------------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Parsing every module costs ~0.15 s, most of a no-op `doit`: the result per file is kept beside Python's own
# bytecode cache, keyed like it by the file's mtime and size.
_IMPORTS_CACHE = PACKAGE_DIR / "__pycache__" / "websd-imports.json"
_imports_cache: dict | None = None


def _cached_imports() -> dict:
    global _imports_cache
    if _imports_cache is None:
        try:
            _imports_cache = json.loads(_IMPORTS_CACHE.read_text())
        except (OSError, ValueError):
            _imports_cache = {}
        atexit.register(_save_imports_cache, dict(_imports_cache))
    return _imports_cache


def _save_imports_cache(loaded: dict) -> None:
    if _imports_cache and _imports_cache != loaded:
        try:
            with atomic_write(_IMPORTS_CACHE) as f:
                json.dump(_imports_cache, f)
        except OSError:
            pass  # a read-only tree: parse again next time


@lru_cache(maxsize=None)
def imports_of(name: str) -> tuple[str, ...]:
    """The ``pipeline`` modules a module imports anywhere in its body (parents of a submodule included)."""
    path = _module_file(name)
    st = path.stat()
    key, cache = f"{st.st_mtime_ns}:{st.st_size}", _cached_imports()
    if cache.get(name, [None])[0] == key:
        return tuple(cache[name][1])
    found = _parse_imports(name, path)
    cache[name] = [key, list(found)]
    return found


def _parse_imports(name: str, path: Path) -> tuple[str, ...]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                prefix = ".".join(parts[:i])
                # (a module's own enclosing packages are already running when it runs: not a dependency)
                if parts[0] == "pipeline" and _module_file(prefix) and not name.startswith(prefix + "."):
                    found.add(prefix)
    found.discard(name)
    return tuple(sorted(found))


def _selected_entries(cfg: Config, sub: str | None) -> set[str]:
    chosen = set()
    if sub is not None:
        chosen.add(submodels.get(sub).__name__)
    family = models.REGISTRY.get(cfg.model.name)
    if family is not None:
        chosen.add(family.__name__)
    adapter = tvm_versions.REGISTRY.get(cfg.tvm.version)  # the TVM API adapter pipeline.tvm_api will call
    if adapter is not None:
        chosen.add(adapter.__name__)
    return chosen


def _registry_entries() -> set[str]:
    return {m.__name__ for reg in REGISTRIES.values() for m in reg.values()}


def code_modules(module: str, selected: set[str] = frozenset()) -> list[str]:
    """The import closure of ``module`` inside ``pipeline``, registry entries only when ``selected``."""
    entries = _registry_entries() - set(selected)
    seen, stack = set(), [module]
    while stack:
        name = stack.pop()
        if name in seen or name in entries:
            continue
        seen.add(name)
        stack.extend(imports_of(name))
    return sorted(seen)


def code_files(stage: Stage, cfg: Config, sub: str | None = None) -> list[Path]:
    """The source files whose content a stage's result depends on (see module doc)."""
    return [_module_file(m) for m in code_modules(stage.run.__module__, _selected_entries(cfg, sub))]
