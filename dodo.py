"""websd build graph: turns the stage records of pipeline/stages.py into doit tasks. No stage logic lives here.

    doit                      build everything stale (TVM, runtime, all submodels, verification, the site)
    doit list                 the tasks
    doit compile_unet         one stage of one submodel (and what it needs)
    doit model.dtype=float16  any config key as section.key=value (see README: Configuration)
    doit clean                remove model-stage outputs; keeps the TVM checkout/build (`doit clean tvm_build`)
"""
import os
import sys

from doit.tools import config_changed

from pipeline import doit_support as ds
from pipeline import models, stages, tvm_build
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.layout import Layout

try:
    CFG = load_config(cli=ds.doit_cli_vars())
    models.source(CFG)  # a bad model.name is one line here, not a traceback from a task
except WebsdError as _e:
    raise SystemExit(f"error: {_e}")
LAYOUT = Layout.from_config(CFG)
ds.use_md5_memo(LAYOUT.cache / ".file-md5.json")
# keys that are part of the output paths (Layout): switching them writes elsewhere, so switching back is free
PATH_KEYS = {"model.name", "model.dtype", "model.image_size", "tvm.version", "tvm.ref"}
TASKS = [(s, sub) for s in stages.STAGES for sub in s.subs()]
PRODUCERS = {str(p): s.task_name(sub) for s, sub in TASKS for p in s.outputs(CFG, sub)}

DOIT_CONFIG = {
    "backend": "sqlite3",  # transactional: an interrupted run cannot corrupt it
    "dep_file": str(LAYOUT.cache / ".doit.sqlite3"),
    "reporter": ds.SummaryReporter,
    "verbosity": 2,  # long stages print their progress live
    "default_tasks": [s.task_name(sub) for s, sub in TASKS if s.default(CFG) and not s.expensive],
}

# one doit at a time per tree; read-only commands and `serve` (it only reads the last complete site) do not lock
if not {"list", "help", "info", "strace", "dumpdb", "tabcompletion", "serve"} & set(sys.argv[1:2]):
    try:
        ds.acquire_tree_lock(LAYOUT.cache, wait=os.environ.get("WEBSD_LOCK_WAIT", "1") != "0")
    except WebsdError as _e:
        raise SystemExit(f"error: {_e}")


def _task(stage: stages.Stage, sub):
    inputs = [str(p) for p in stage.inputs(CFG, sub)]
    tracked = inputs + [str(p) for p in stages.code_files(stage, CFG, sub)]
    if stage.runs_tvm:
        tracked.append(str(LAYOUT.tvm_build_stamp))
    if stage.in_process:
        action = ds.python_stage(stage.run, *((CFG, sub) if stage.per_submodel else (CFG,)))
    else:
        action = ds.subprocess_stage(stage.task_name(sub), stage.name, sub or "all", ds.doit_cli_vars(),
                                     lambda: tvm_build.tvm_env(LAYOUT), LAYOUT.cache)
    keys = [k for k in stage.config_keys if stage.shared_outputs or k not in PATH_KEYS]
    # file_states, not file_dep: it remembers every configuration's files, so switching a config back is free
    uptodate = [False] if stage.always else [ds.file_states(tracked)]
    uptodate += [config_changed(CFG.subset(*keys))] if keys and not stage.always else []
    if stage.fingerprint and not stage.always:
        # remembered per output paths: a fingerprint of TVM v0.21's tree does not replace v0.26's
        uptodate.append(ds.fingerprint_uptodate(stage.name, lambda: stage.fingerprint(CFG),
                                                scope=repr([str(p) for p in stage.outputs(CFG, sub)])))
    cleans_args = (CFG, sub) if stage.per_submodel else (CFG,)
    removes = (lambda: stage.cleans(*cleans_args)) if stage.cleans else (lambda: stage.outputs(CFG, sub))
    return {
        "basename": stage.task_name(sub), "doc": stage.doc, "actions": [action], "verbosity": 2,
        "targets": [str(p) for p in stage.outputs(CFG, sub)], "uptodate": uptodate,
        "task_dep": sorted(({PRODUCERS[p] for p in tracked if p in PRODUCERS} | set(stage.after))
                           - {stage.task_name(sub)}),
        "clean": [ds.clean_only_when_named(stage.name, removes) if stage.expensive
                  else (lambda: ds.remove_paths(removes()))],
    }


def _tasks(stage: stages.Stage):
    for sub in stage.subs():
        yield _task(stage, sub)
    if not stage.per_submodel:
        return
    yield {"basename": stage.name, "actions": None, "doc": f"{stage.name} all submodels",  # e.g. `doit trace`
           "task_dep": [stage.task_name(sub) for sub in stage.subs()]}


for _stage in stages.STAGES:
    globals()[f"task_{_stage.name}"] = (lambda s: lambda: _tasks(s))(_stage)
