"""A stage's code dependencies, derived: the import closure, inside ``pipeline/``, of the module that holds its run
function (``code_files``), every import counted, those inside functions too.

One refinement keeps it exact: a registry package (``pipeline.submodels``, ``pipeline.models``,
``pipeline.toolchain.tvm_versions``) maps names to entry modules and a stage calls only the entry its config selects,
so the other entries are left out (an edit of the VAE wrapper does not make ``trace_unet`` stale; an edit of
``sd15_random.py`` does not make a tiny build stale; an edit of the TVM v0.21 API adapter does not make a v0.26 build
stale). tests/test_stages.py checks that this covers every file a stage executes.
"""
from __future__ import annotations

import ast
import atexit
import json
from functools import lru_cache
from pathlib import Path

from . import models, submodels
from .config import Config
from .errors import WebsdError
from .fsutil import atomic_write
from .toolchain import tvm_versions

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
# registry -> entry module of each name
REGISTRIES = {"pipeline.submodels": {name: s.module for name, s in submodels.REGISTRY.items()},
              "pipeline.models": {name: f.module for name, f in models.REGISTRY.items()},
              "pipeline.toolchain.tvm_versions": {v: m.__name__ for v, m in tvm_versions.REGISTRY.items()}}


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
        chosen.add(submodels.get(sub).module)
    family = models.REGISTRY.get(cfg.model.name)
    if family is not None:
        chosen.add(family.module)
    try:  # the TVM API adapter pipeline.toolchain.tvm_api will call (the same selector)
        chosen.add(tvm_versions.select(cfg.tvm.version).__name__)
    except WebsdError:
        pass  # no adapter for that version: the stage fails saying so, whatever its code
    return chosen


def _registry_entries() -> set[str]:
    return {module for reg in REGISTRIES.values() for module in reg.values()}


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


def code_files(module: str, cfg: Config, sub: str | None = None) -> list[Path]:
    """The source files whose content the result of a stage run from ``module`` depends on (see module doc)."""
    return [_module_file(m) for m in code_modules(module, _selected_entries(cfg, sub))]
