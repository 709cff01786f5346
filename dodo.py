"""websd build graph: turns the stage records of pipeline/stages.py into doit tasks. No stage logic lives here.

    doit                      build everything stale (TVM, runtime, all submodels, verification, the site)
    doit list                 the tasks
    doit compile_unet         one stage of one submodel (and what it needs)
    doit model.dtype=float16  any config key as section.key=value (see README: Configuration)
    doit clean                remove model-stage outputs; keeps the TVM checkout/build (`doit clean tvm_build`)
"""
import os
import sys
from pathlib import Path

from doit.tools import config_changed

from pipeline import doit_support as ds
from pipeline import models, remote_cache, sizes, stages, variants
from pipeline.toolchain import tvm_build, versions
from pipeline.config import load_config
from pipeline.model import lora
from pipeline.errors import WebsdError
from pipeline.layout import Layout

try:
    CFG = load_config(cli=ds.doit_cli_vars())
    models.source(CFG)  # a bad model.name is one line here, not a traceback from a task
    models.dims(CFG)  # likewise a bad model.image_size, before any stage runs
    lora.parse(CFG)  # and a model.lora file that is not there
    sizes.extra(CFG)  # and a model.sizes entry the model does not take
    variants.extra(CFG)  # and a webgpu.variants kernel set the model's dtype cannot take
    versions.release(CFG.tvm.version)  # and a tvm.version with no release entry
except WebsdError as _e:
    raise SystemExit(f"error: {_e}")
LAYOUT = Layout.from_config(CFG)
ds.use_md5_memo(LAYOUT.cache / ".file-md5.json")
TASKS = stages.tasks(CFG)  # per stage and submodel, and the size-dependent ones per extra size of model.sizes
PRODUCERS = {str(p): t.name for t in TASKS for p in t.stage.outputs(t.cfg, t.sub)}

DOIT_CONFIG = {
    # sqlite3 committed after every task (pyproject.toml [tool.doit.plugins.backend]): a killed or failed run keeps
    # every task it finished
    "backend": "websd",
    "dep_file": str(LAYOUT.cache / ".doit.sqlite3"),
    "reporter": ds.SummaryReporter,
    "verbosity": 2,  # long stages print their progress live
    "default_tasks": [t.name for t in TASKS if t.stage.default(CFG) and not t.stage.expensive],
}

# one doit at a time per tree; read-only commands and `serve` (it only reads the last complete site) do not lock
if not {"list", "help", "info", "strace", "dumpdb", "tabcompletion", "serve"} & set(sys.argv[1:2]):
    try:
        ds.acquire_tree_lock(LAYOUT.cache, wait=os.environ.get("WEBSD_LOCK_WAIT", "1") != "0")
    except WebsdError as _e:
        raise SystemExit(f"error: {_e}")


def _task(task: stages.StageTask):
    stage, sub, cfg, name = task.stage, task.sub, task.cfg, task.name
    inputs = [str(p) for p in stage.inputs(cfg, sub)]
    tracked = inputs + [str(p) for p in stage.code_files(cfg, sub)]
    if stage.runs_tvm:
        tracked.append(str(LAYOUT.tvm_build_stamp))
    if stage.in_process:
        action = ds.python_stage(stage.run, cfg, sub, cache_dir=LAYOUT.cache)
    else:
        action = ds.subprocess_stage(name, stage.name, sub or "all", task.overrides(ds.doit_cli_vars()),
                                     lambda: tvm_build.tvm_env(LAYOUT), LAYOUT.cache)
    # the output paths follow Layout.PATH_KEYS, so switching one back is free; except for outputs at one path for
    # every config (the site), which are stale when a path key changes
    keys = [*stage.config_keys, *Layout.PATH_KEYS] if stage.shared_outputs else \
        [k for k in stage.config_keys if k not in Layout.PATH_KEYS]
    if stage.cached_remotely:  # looked up only when doit has decided the stage must run (pipeline.remote_cache)
        action = remote_cache.cached(action, remote_cache.StagePlan(
            task=name, sub=sub, tracked=lambda: [Path(p) for p in tracked],
            config=lambda: cfg.subset(*keys),  # the path keys count through the output paths, as for doit
            fingerprint=lambda: stage.fingerprint(cfg, sub) if stage.has_fingerprint else None,
            roots=lambda: stage.cleans(cfg, sub), tools=stage.tools), cfg)
    # file_states, not file_dep: it remembers each configuration's files (scoped by the output paths, which name the
    # configuration), so switching a config back is free and a code change is stale for every configuration
    scope = repr([str(p) for p in stage.outputs(cfg, sub)])
    uptodate = [False] if stage.always else [ds.file_states(tracked, scope)]
    uptodate += [config_changed(cfg.subset(*keys))] if keys and not stage.always else []
    if stage.has_fingerprint and not stage.always:
        # remembered per output paths: a fingerprint of TVM v0.21's tree does not replace v0.26's
        uptodate.append(ds.fingerprint_uptodate(stage.name, lambda: stage.fingerprint(cfg, sub), scope=scope))
    return {
        "basename": name, "doc": stage.doc, "actions": [action], "verbosity": 2,
        "targets": [str(p) for p in stage.outputs(cfg, sub)], "uptodate": uptodate,
        "task_dep": sorted(({PRODUCERS[p] for p in tracked if p in PRODUCERS} | set(stage.after))
                           - {name}),
        "clean": [ds.clean_only_when_named(stage.name, lambda: stage.cleans(cfg, sub)) if stage.expensive
                  else (lambda: ds.remove_paths(stage.cleans(cfg, sub)))],
    }


def _tasks(stage: stages.Stage):
    own = [t for t in TASKS if t.stage is stage]
    yield from map(_task, own)
    if not stage.per_submodel:
        return
    yield {"basename": stage.name, "actions": None, "doc": f"{stage.name} all submodels",  # e.g. `doit trace`
           "task_dep": [t.name for t in own]}


for _stage in stages.STAGES:
    globals()[f"task_{_stage.name}"] = (lambda s: lambda: _tasks(s))(_stage)
