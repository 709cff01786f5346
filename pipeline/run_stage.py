"""Run one model stage in its own process: ``python -m pipeline.run_stage <stage> [<submodel>] [section.key=value ...]``.

dodo.py runs the heavy stages this way so that its own process stays light and the stage imports the TVM the
``tvm_build`` stage selected (through PYTHONPATH/TVM_LIBRARY_PATH in the environment). Bad input prints one
``error: ...`` line and exits 2.

``stage_io(cfg, stage, sub)`` tells dodo.py each stage's file dependencies, targets and config keys.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Callable

from . import compile as compile_stage
from . import models, shard, submodels, trace, verify
from .config import Config, load_config
from .errors import WebsdError
from .layout import Layout


def link(cfg: Config, sub: str) -> str:
    """Stage ``link_<sub>``: the compiled wasm objects + the tvmjs runtime objects -> ``Layout.wasm_path(sub)``."""
    from .wasm_link import link_wasm

    layout = Layout.from_config(cfg)
    return str(link_wasm(compile_stage.paths(cfg, sub)["webgpu"], layout.tvmjs_dir, layout.wasm_path(sub),
                         cfg.link.profile))


# stage -> (function, takes a submodel). Model-level stages accept the submodel "all" (ignored).
STAGES: dict[str, tuple[Callable, bool]] = {
    "weights": (lambda cfg: str(models.materialize(cfg)), False),
    "trace": (trace.trace, True),
    "compile": (compile_stage.compile_submodel, True),
    "compile_webgpu": (lambda cfg, sub: compile_stage.compile_submodel(cfg, sub, ("webgpu",)), True),
    "compile_llvm": (lambda cfg, sub: compile_stage.compile_submodel(cfg, sub, ("llvm",)), True),
    "link": (link, True),
    "shard": (shard.shard, True),
    "verify": (verify.verify, True),
    "manifest": (models.model_manifest, False),
}


def stage_io(cfg: Config, stage: str, sub: str | None = None) -> dict:
    """``{"file_dep": [...], "targets": [...], "config_keys": [...]}`` of a stage (paths as strings).

    Config keys are the ones the stage reads beyond its file dependencies (for doit's ``uptodate``). The TVM
    build stamp and the stages' own code files are not listed (dodo.py adds them).
    """
    if stage == "weights":
        files = sorted({p for s in submodels.REGISTRY for p in models.weight_files(cfg, s)}) \
            if models.materialized(cfg) else []
        return {"file_dep": [str(p) for p in models.model_code_files(cfg)], "targets": [str(p) for p in files],
                "config_keys": ["model.name", "model.seed"]}
    submodels.get(sub or "")
    layout = Layout.from_config(cfg)
    table = {
        "trace": (trace.file_deps, trace.targets, trace.CONFIG_KEYS),
        "compile": (compile_stage.file_deps, compile_stage.targets, compile_stage.CONFIG_KEYS),
        "compile_webgpu": (compile_stage.file_deps, lambda c, s: compile_stage.targets(c, s, ("webgpu",)),
                           compile_stage.CONFIG_KEYS),
        "compile_llvm": (compile_stage.file_deps, lambda c, s: compile_stage.targets(c, s, ("llvm",)),
                         compile_stage.CONFIG_KEYS),
        "link": (lambda c, s: [compile_stage.paths(c, s)["webgpu"]], lambda c, s: [layout.wasm_path(s)],
                 ("link.profile",)),
        "shard": (shard.file_deps, shard.targets, shard.CONFIG_KEYS),
        "verify": (verify.file_deps, verify.targets, verify.CONFIG_KEYS),
    }
    if stage not in table:
        raise WebsdError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    deps, outs, keys = table[stage]
    return {"file_dep": [str(p) for p in deps(cfg, sub)], "targets": [str(p) for p in outs(cfg, sub)],
            "config_keys": list(keys)}


def run(stage: str, sub: str | None, overrides: dict[str, str]) -> object:
    if stage not in STAGES:
        raise WebsdError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    func, takes_sub = STAGES[stage]
    cfg = load_config(cli=overrides)
    if takes_sub:
        if sub is None:
            raise WebsdError(f"stage {stage} needs a submodel ({', '.join(submodels.REGISTRY)})")
        submodels.get(sub)
        return func(cfg, sub)
    if sub not in (None, "all"):
        raise WebsdError(f"stage {stage} takes no submodel (got {sub!r})")
    return func(cfg)


def _parse(argv: list[str]) -> tuple[str, str | None, dict[str, str]]:
    if not argv or argv[0] in ("-h", "--help"):
        raise WebsdError("usage: python -m pipeline.run_stage <stage> [<submodel>] [section.key=value ...]; "
                         f"stages: {', '.join(STAGES)}")
    stage, rest = argv[0], argv[1:]
    sub = rest.pop(0) if rest and "=" not in rest[0] else None
    overrides = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise WebsdError(f"expected section.key=value, got {item!r}")
        overrides[key] = value
    return stage, sub, overrides


def _quiet_libraries() -> None:
    # progress bars and advice from the HF libraries would bury the one-line result in doit's output
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _quiet_libraries()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's pytree deprecation notes on every load
    start = time.perf_counter()
    try:
        stage, sub, overrides = _parse(argv)
        result = run(stage, sub, overrides)
    except WebsdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if stage == "manifest":
        print(json.dumps(result, indent=2))
    else:
        print(f"{stage} {sub or ''}: done in {time.perf_counter() - start:.1f} s".replace("  ", " "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
