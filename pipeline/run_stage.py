"""Run one stage in its own process: ``python -m pipeline.run_stage <stage> [<submodel>] [section.key=value ...]``.

dodo.py runs the heavy stages this way (pipeline.stages says which) so that its own process stays light and the
stage imports the TVM the ``tvm_build`` stage selected (through PYTHONPATH/TVM_LIBRARY_PATH in the environment).
Bad input prints one ``error: ...`` line and exits 2.
"""
from __future__ import annotations

import os
import sys
import time
import warnings

from . import code_deps, stages, submodels
from .config import load_config
from .errors import WebsdError
from .fs_errors import explain, low_space


def _record_executed_files(path: str):
    """With WEBSD_REPORT_MODULES set: note every project file whose code runs during the stage (a profile hook
    on function calls), written to that path at exit. tests/test_stages.py checks it against the stage's derived
    code dependencies."""
    executed: set[str] = set()
    root = str(code_deps.PACKAGE_DIR)

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(root):
            executed.add(frame.f_code.co_filename)

    sys.setprofile(hook)
    return executed


def run(name: str, sub: str | None, overrides: dict[str, str]) -> object:
    stage = stages.get(name)
    cfg = load_config(cli=overrides)
    if stage.per_submodel:
        if sub is None:
            raise WebsdError(f"stage {name} needs a submodel ({', '.join(submodels.names())})")
        submodels.get(sub)
    elif sub not in (None, "all"):
        raise WebsdError(f"stage {name} takes no submodel (got {sub!r})")
    report = os.environ.get("WEBSD_REPORT_MODULES")
    executed = _record_executed_files(report) if report else None
    try:
        return stage.run(cfg, sub)
    finally:
        if executed is not None:
            sys.setprofile(None)
            with open(report, "w") as f:
                f.write("\n".join(sorted(executed)))


def _parse(argv: list[str]) -> tuple[str, str | None, dict[str, str]]:
    if not argv or argv[0] in ("-h", "--help"):
        raise WebsdError("usage: python -m pipeline.run_stage <stage> [<submodel>] [section.key=value ...]; "
                         f"stages: {', '.join(stages.BY_NAME)}")
    name, rest = argv[0], argv[1:]
    sub = rest.pop(0) if rest and "=" not in rest[0] else None
    overrides = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise WebsdError(f"expected section.key=value, got {item!r}")
        overrides[key] = value
    return name, sub, overrides


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
        name, sub, overrides = _parse(argv)
        run(name, sub, overrides)
    except WebsdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a full disk or read-only cache is one line; anything else re-raised
        cache = load_config(cli=overrides).paths.cache_dir
        err = explain(e, cache) or low_space(cache)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{name} {sub or ''}: done in {time.perf_counter() - start:.1f} s".replace("  ", " "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
