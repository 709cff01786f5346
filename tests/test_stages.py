"""The stage table (pipeline/stages.py), the code dependencies it derives (pipeline/code_deps.py) and dodo.py's
wiring of them.

* No import cycles inside pipeline/ (every import counted, those inside functions too).
* A stage's derived code (``Stage.code_files``, pipeline.code_deps) covers every project file its run executes (recorded by a profile
  hook in ``python -m pipeline.run_stage``; the tiny model, the stages that need no TVM source).
* For every project module, a behaviour change makes ``doit list --status`` report stale exactly the tasks whose
  derived code includes that module, and nothing else.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from pipeline import code_deps, stages
from pipeline.config import load_config

MODULES = sorted(code_deps._module_name(p) for p in code_deps.PACKAGE_DIR.rglob("*.py"))


def _cycles(graph: dict[str, tuple[str, ...]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_in_pipeline():
    graph = {m: code_deps.imports_of(m) for m in MODULES}
    assert not _cycles(graph), _cycles(graph)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": ("b",), "b": ("c",), "c": ("a",), "d": ()}) == [["a", "b", "c", "a"]]


def test_imports_inside_functions_count(tmp_path):
    # pipeline/page/site.py imports manifest at module level; hf imports models; submodels import hf inside functions
    assert "pipeline.model.hf" in code_deps.imports_of("pipeline.submodels.unet")
    assert "pipeline.page.manifest" in code_deps.imports_of("pipeline.page.site")


def test_registry_entries_are_code_only_when_selected():
    cfg = load_config(pyproject=None, cli={"model.name": "tiny"})
    trace = stages.get("trace")
    names = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in trace.code_files(cfg, "unet")}
    assert {"submodels/unet.py", "submodels/attention.py", "models/tiny.py", "model/trace.py", "model/hf.py"} <= names
    assert not {"submodels/vae.py", "submodels/clip.py", "models/sd15_random.py"} & names
    shard = {p.name for p in stages.get("shard").code_files(cfg, "unet")}
    assert "unet.py" not in shard and "trace.py" not in shard  # a wrapper edit does not re-shard


def test_only_the_selected_tvm_adapter_is_code():
    """tvm.version selects one adapter of pipeline/toolchain/tvm_versions: editing v0.21's leaves a v0.26 build fresh."""
    for version, mine, other in (("0.26.0", "v0_26.py", "v0_21.py"), ("0.21.0", "v0_21.py", "v0_26.py")):
        cfg = load_config(pyproject=None, cli={"tvm.version": version})
        names = {p.name for p in stages.get("compile").code_files(cfg, "unet")}
        assert mine in names and other not in names, (version, names)
        assert "v0_21.py" not in {p.name for p in stages.get("trace").code_files(cfg, "unet")}


# --- the derived code covers what a stage runs --------------------------------------------------------------------

CI_STAGES = [("weights", None), ("trace", "unet"), ("compile", "unet"), ("shard", "unet"), ("verify", "unet"),
             ("tokenizer", None)]


@pytest.mark.slow
def test_code_files_cover_every_file_a_stage_executes(tmp_path):
    env = {**os.environ, "WEBSD_PATHS_CACHE": str(tmp_path / "cache")}
    cfg = load_config(pyproject=None, env=env, cli={})
    for name, sub in CI_STAGES:
        report = tmp_path / f"{name}.txt"
        proc = subprocess.run([sys.executable, "-m", "pipeline.run_stage", name, *([sub] if sub else [])],
                              cwd=ROOT, env={**env, "WEBSD_REPORT_MODULES": str(report)}, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        executed = {Path(p) for p in report.read_text().split()}
        orchestration = {code_deps.PACKAGE_DIR / f for f in ("run_stage.py", "stages.py")}
        code = set(stages.get(name).code_files(cfg, sub))
        assert executed - orchestration, f"{name}: nothing recorded"
        assert executed - orchestration <= code, f"{name} ran code it does not depend on: {executed - code - orchestration}"


# --- doit marks stale exactly the stages whose code changed -------------------------------------------------------

_NO_OP_ACTIONS = '''

# test_stages.py: actions that do nothing, so that every task can be marked done without building anything
def python_stage(fn, *args, **kwargs):
    return lambda: None


def subprocess_stage(task_name, stage, submodel, overrides, env_fn, cache_dir):
    return lambda: None
'''


def _status(project: Path, env: dict) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-m", "doit", "list", "--all", "--status", "--quiet"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {line.split()[1]: line.split()[0] for line in proc.stdout.splitlines() if re.match(r"^[RUI] \S", line)}


@pytest.mark.slow
def test_a_module_change_makes_exactly_its_stages_stale(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "web", project / "web", symlinks=True,
                    ignore=lambda d, names: [n for n in names if n == "node_modules"])
    (project / "web" / "node_modules").symlink_to(ROOT / "web" / "node_modules")
    with open(project / "pipeline" / "doit_support.py", "a") as f:
        f.write(_NO_OP_ACTIONS)
    env = {**os.environ, "WEBSD_PATHS_CACHE": str(project / "cache"), "PYTHONPATH": str(project)}
    # every output exists (as a stand-in) and every task has run once: all up to date
    sys.path.insert(0, str(project))
    try:
        cfg = load_config(pyproject=None, env=env, cli={})
        for stage in stages.STAGES:
            for sub in stage.subs():
                for out in [*stage.outputs(cfg, sub), *stage.inputs(cfg, sub)]:
                    if not out.exists():
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text("{}" if out.suffix == ".json" else "stand-in")
    finally:
        sys.path.remove(str(project))
    run = subprocess.run([sys.executable, "-m", "doit"], cwd=project, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # always-run tasks and the per-stage groups (no actions of their own) are never "up to date"
    always = {s.name for s in stages.STAGES if s.always or s.per_submodel}
    before = _status(project, env)
    assert {t for t, s in before.items() if s == "R"} <= always, before

    code = {(s, sub): {p.relative_to(code_deps.PACKAGE_DIR) for p in s.code_files(cfg, sub)}
            for s in stages.STAGES for sub in s.subs()}
    checked = 0
    for module in sorted((project / "pipeline").rglob("*.py")):
        rel = module.relative_to(project / "pipeline")
        original = module.read_text()
        module.write_text(original + "\n_STALENESS_PROBE = 1  # a behaviour change: a new module attribute\n")
        try:
            stale = {t for t, s in _status(project, env).items() if s == "R"} - always
        finally:
            module.write_text(original)
        expected = {s.task_name(sub) for (s, sub), files in code.items() if rel in files and not s.always}
        assert stale == expected, f"{rel}: stale {sorted(stale)}, its code is in {sorted(expected)}"
        checked += 1
    assert checked == len(MODULES)


# --- one shape for every stage module --------------------------------------------------------------------------


def test_every_stage_module_has_the_stage_shape():
    for stage in stages.STAGES:
        assert callable(stage.module.run), stage.name
        assert stage.always or callable(stage.module.outputs), stage.name


def test_a_stage_function_of_the_wrong_arity_is_refused_when_the_table_loads():
    import types

    module = types.ModuleType("pipeline.fake_stage")
    module.run = lambda cfg: None
    module.outputs = lambda cfg, sub: []
    with pytest.raises(TypeError, match=r"fake_stage.run takes 1 positional arguments, a per-submodel stage"):
        stages.Stage("fake", "a fake", module, per_submodel=True)
    module.run = lambda cfg, sub, which=None: None
    assert stages.Stage("fake", "a fake", module, per_submodel=True).run(None, "clip") is None
    with pytest.raises(TypeError, match=r"fake_stage.run takes 2 positional arguments, a stage function takes 1"):
        stages.Stage("fake", "a fake", module)
    module.fingerprint = lambda cfg: None  # per submodel, a fingerprint takes (cfg, sub) like the rest
    with pytest.raises(TypeError, match=r"fake_stage.fingerprint takes 1 positional arguments, a per-submodel"):
        stages.Stage("fake", "a fake", module, per_submodel=True)
    module.fingerprint = lambda cfg, sub: [sub]
    assert stages.Stage("fake", "a fake", module, per_submodel=True).fingerprint(None, "unet") == ["unet"]
    del module.fingerprint
    del module.outputs
    with pytest.raises(TypeError, match="needs run and outputs"):
        stages.Stage("fake", "a fake", module, per_submodel=True)
