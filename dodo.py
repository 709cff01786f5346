"""websd build graph: wires the stages of pipeline/ into doit tasks. No stage logic lives here.

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
from pipeline import models, tvm_build, tvm_checkout
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.fsutil import read_json
from pipeline.layout import SUBMODELS, Layout

try:
    CFG = load_config(cli=ds.doit_cli_vars())
except WebsdError as _e:
    raise SystemExit(f"error: {_e}")
LAYOUT = Layout.from_config(CFG)
VERIFY = models.cpu_verification(CFG)
DEFAULT_STAGES = ("trace", "compile", "link", "shard") + (("verify",) if VERIFY else ())
CACHE = LAYOUT.cache
CODE = Path(__file__).parent / "pipeline"

DOIT_CONFIG = {
    "backend": "sqlite3",  # transactional: an interrupted run cannot corrupt it
    "dep_file": str(CACHE / ".doit.sqlite3"),
    "reporter": ds.SummaryReporter,
    "verbosity": 2,  # long stages print their progress live
    # every model stage by name, so that `doit clean` cleans them all (and never the TVM toolchain)
    "default_tasks": ["weights", *(f"{stage}_{sub}" for stage in DEFAULT_STAGES for sub in SUBMODELS),
                      "tokenizer", "site"],
}

# one doit at a time per tree (read-only commands excepted); WEBSD_LOCK_WAIT=0 refuses instead of waiting
if not {"list", "help", "info", "strace", "dumpdb", "tabcompletion"} & set(sys.argv[1:2]):
    try:
        ds.acquire_tree_lock(CACHE, wait=os.environ.get("WEBSD_LOCK_WAIT", "1") != "0")
    except WebsdError as _e:
        raise SystemExit(f"error: {_e}")

# The overrides a stage subprocess needs to rebuild the same Config (the command-line layer; the others it re-reads).
OVERRIDES = ds.doit_cli_vars()


def _code(*names: str) -> list[str]:
    """The stage's own source files: editing them makes exactly that stage stale."""
    return [str(CODE / n) for n in names]


def _tvm_env():
    return tvm_build.tvm_env(LAYOUT)


# --- TVM toolchain ------------------------------------------------------------------------------------------------


def task_tvm_checkout():
    """Check out Apache TVM at tvm.ref (from tvm.git or tvm.mirror) with the tvm-ffi submodule."""

    def is_current(task, values):
        stamp = read_json(LAYOUT.tvm_checkout_stamp, {})
        return (stamp.get("ref") == CFG.tvm.resolved_ref and stamp.get("remote") == CFG.tvm.remote
                and stamp.get("ffi_mirror", "") == CFG.tvm.ffi_mirror and (LAYOUT.tvm_src / ".git").exists())

    return {
        "actions": [ds.python_stage(tvm_checkout.checkout_tvm, CFG)],
        "targets": [str(LAYOUT.tvm_checkout_stamp)],
        "uptodate": [is_current],
        "clean": [ds.clean_only_when_named("tvm_checkout", lambda: [LAYOUT.tvm_src, LAYOUT.tvm_checkout_stamp])],
    }


def task_tvm_build():
    """Select the TVM later stages use: the apache-tvm wheel, or a cmake/ninja build of the checkout (tvm.build)."""
    from pipeline.progress import StageProgress

    def run():
        with StageProgress("tvm_build") as progress:
            tvm_build.build_tvm(CFG, progress.update)

    def build_inputs():
        return [tvm_checkout.source_fingerprint(LAYOUT.tvm_src, tvm_checkout.BUILD_PATHS),
                tvm_build.installed_wheel_version(), tvm_build.selection_present(LAYOUT)]

    return {
        "actions": [ds.python_stage(run)],
        "task_dep": ["tvm_checkout"],
        "targets": [str(LAYOUT.tvm_build_stamp)],
        "file_dep": _code("tvm_build.py"),
        "uptodate": [config_changed(CFG.subset("tvm.build", "tvm.llvm_config", "tvm.version")),
                     ds.fingerprint_uptodate("tvm_sources", build_inputs)],
        "clean": [ds.clean_only_when_named("tvm_build", lambda: [LAYOUT.tvm_build_dir, LAYOUT.tvm_build_stamp])],
    }


def task_tvmjs_runtime():
    """Build TVM's web runtime with emscripten (wasm objects + tvmjs_runtime.wasi.js) and tvmjs.bundle.js."""
    from pipeline import tvmjs_runtime
    from pipeline.progress import StageProgress

    def run():
        with StageProgress("tvmjs_runtime") as progress:
            tvmjs_runtime.build_tvmjs_runtime(LAYOUT.tvm_src, LAYOUT.tvmjs_dir, progress=progress.step)

    return {
        "actions": [ds.python_stage(run)],
        "task_dep": ["tvm_checkout"],
        "targets": [str(tvmjs_runtime.runtime_stamp(LAYOUT.tvmjs_dir))],
        "file_dep": _code("tvmjs_runtime.py"),
        "uptodate": [ds.fingerprint_uptodate("runtime_sources", lambda: tvm_checkout.source_fingerprint(
            LAYOUT.tvm_src, tvmjs_runtime.RUNTIME_PATHS))],
        "clean": [ds.clean_only_when_named("tvmjs_runtime", lambda: [LAYOUT.tvmjs_dir,
                                                                   tvmjs_runtime.logs_dir(LAYOUT.tvmjs_dir)])],
    }


# --- model stages: one task per stage and submodel ------------------------------------------------------------------
# Each stage module declares what it reads and writes (pipeline.run_stage.stage_io); dodo adds the stage's own code,
# the TVM selection for stages that run TVM, and the order-only task_deps.

# Config keys already encoded in the output paths (Layout: model dir and <dtype>-<size> variant dir): switching them
# writes elsewhere instead of overwriting, so switching back finds the old outputs up to date.
PATH_KEYS = {"model.name", "model.dtype", "model.image_size"}
STAGE_CODE = {"trace": ["trace.py", "submodels/{sub}.py", "submodels/attention.py"], "compile": ["compile.py", "tvm_api.py", "webgpu_limits.py", "shard.py"],
              "link": ["wasm_link.py"], "shard": ["shard.py"], "verify": ["verify.py"]}
# stages that import TVM: they depend on which TVM tvm_build selected (sharding uses TVM only to write its format)
TVM_STAGES = {"compile", "verify"}


def _model_task(stage: str, sub: str, doc: str, task_dep: list[str]) -> dict:
    from pipeline.run_stage import stage_io

    io = stage_io(CFG, stage, sub)
    keys = [k for k in io["config_keys"] if k not in PATH_KEYS]
    # the stage's inputs sit in per-model/dtype/size directories: checked by ds.file_states, not file_dep, so
    # that switching model.dtype back does not rebuild (see there); their producers are declared as task_dep
    file_dep = _code(*(c.format(sub=sub) for c in STAGE_CODE[stage]))
    if stage in TVM_STAGES:
        file_dep.append(str(LAYOUT.tvm_build_stamp))
    producers = _producers()
    return {
        "basename": f"{stage}_{sub}",
        "doc": doc,
        **_stage(f"{stage}_{sub}", stage, sub),
        "file_dep": file_dep,
        "targets": io["targets"],
        "task_dep": task_dep + sorted({producers[p] for p in io["file_dep"] if p in producers} - set(task_dep)),
        "uptodate": [ds.file_states(io["file_dep"])] + ([config_changed(CFG.subset(*keys))] if keys else []),
        "clean": [(ds.remove_paths, [io["targets"]])],
    }


_PRODUCERS: dict[str, str] = {}


def _producers() -> dict[str, str]:
    """target path -> the model-stage task that writes it (what doit would infer from file_dep)."""
    from pipeline.run_stage import stage_io

    if not _PRODUCERS:
        if models.materialized(CFG):
            _PRODUCERS.update(dict.fromkeys(stage_io(CFG, "weights")["targets"], "weights"))
        for stage in STAGE_CODE:
            for sub in SUBMODELS:
                _PRODUCERS.update(dict.fromkeys(stage_io(CFG, stage, sub)["targets"], f"{stage}_{sub}"))
    return _PRODUCERS


def _stage(task_name: str, stage: str, submodel: str) -> dict:
    return {"actions": [ds.subprocess_stage(task_name, stage, submodel, OVERRIDES, _tvm_env, CACHE)]}


def _group(name: str, doc: str, subs=SUBMODELS) -> dict:
    return {"basename": name, "actions": None, "task_dep": [f"{name}_{s}" for s in subs], "doc": doc}


def task_weights():
    """Materialize the embedded model's weights (tiny / sd15-random) as a diffusers folder."""
    from pipeline import models
    from pipeline.run_stage import stage_io

    if not models.materialized(CFG):
        return {"actions": None, "doc": "nothing to do: the model is a local diffusers folder"}
    io = stage_io(CFG, "weights")
    return {
        **_stage("weights", "weights", "all"),
        "targets": io["targets"],
        "file_dep": io["file_dep"],
        "uptodate": [config_changed(CFG.subset(*(k for k in io["config_keys"] if k not in PATH_KEYS)))],
        "clean": [(ds.remove_paths, [[models.weights_dir(CFG)]])],
    }


def task_trace():
    """torch.export of each submodel's wrapper (never depends on TVM)."""
    for sub in SUBMODELS:
        yield _model_task("trace", sub, f"torch.export the {sub} wrapper", ["weights"])
    yield _group("trace", "trace all submodels")


def task_compile():
    """Import each trace into TVM Relax and build it for WebGPU (wasm32 host) and for llvm (verification)."""
    for sub in SUBMODELS:
        yield _model_task("compile", sub, f"compile {sub} with TVM Relax for WebGPU and llvm", ["tvm_build"])
    yield _group("compile", "compile all submodels")


def task_link():
    """Link each compiled submodel with the precompiled tvmjs runtime objects into the .wasm the page loads."""
    from pipeline import tvmjs_runtime

    for sub in SUBMODELS:
        task = _model_task("link", sub, f"link {sub}.wasm with the tvmjs runtime", ["tvmjs_runtime"])
        task["file_dep"].append(str(tvmjs_runtime.runtime_stamp(LAYOUT.tvmjs_dir)))
        yield task
    yield _group("link", "link all submodels")


def task_shard():
    """Write each submodel's parameters as a tvmjs tensor cache (32 MB shards; float16 when model.dtype is)."""
    for sub in SUBMODELS:
        # TVM writes the format, so it must be selected first, but a TVM change does not re-shard
        task = _model_task("shard", sub, f"shard {sub} parameters into the tensor cache", ["tvm_build"])
        task["clean"] = [(ds.remove_paths, [[LAYOUT.params_dir(sub)]])]
        yield task
    yield _group("shard", "shard all submodels")


def task_verify():
    """Run each llvm build against PyTorch on the same inputs; write a max-abs-error report."""
    if not VERIFY:
        def disabled():
            print(f"verification is off for {CFG.model.name} (model.verify={CFG.model.verify}): "
                  f"set model.verify=on to build the llvm modules and verify_* tasks")

        yield {"basename": "verify", "actions": [disabled], "uptodate": [False], "doc": "verification is off"}
        return
    for sub in SUBMODELS:
        yield _model_task("verify", sub, f"check the TVM {sub} (llvm) against PyTorch", ["tvm_build"])
    yield _group("verify", "verify all submodels")


# --- the web page ---------------------------------------------------------------------------------------------------


def task_tokenizer():
    """Write the CLIP tokenizer files (tokenizer.json, vocab.json, merges.txt) the page tokenizes with."""
    from pipeline import site

    out = LAYOUT.model_dir / "tokenizer"
    return {
        "actions": [ds.python_stage(site.write_tokenizer, CFG)],
        "file_dep": _code("tokenizer.py", "site.py"),
        "targets": [str(out / name) for name in site.TOKENIZER_FILES],
        "uptodate": [config_changed(CFG.subset("model.name"))],
        "clean": [(ds.remove_paths, [[out]])],
    }


def task_site():
    """Assemble cache/site: the page, tvmjs.bundle.js, each submodel's .wasm and tensor cache, and the manifest."""
    from pipeline import models, site

    def run():
        site.assemble_site(CFG, models.model_manifest(CFG))

    inputs = site.site_inputs(CFG)
    return {
        "actions": [ds.python_stage(run)],
        "file_dep": [str(p) for p in inputs.values()] + _code("site.py"),
        "task_dep": ["link", "shard", "tokenizer"],
        "targets": [str(LAYOUT.site_dir / "model" / "manifest.json")],
        "uptodate": [config_changed(CFG.subset("model.name", "model.dtype", "model.image_size"))],
        "clean": [(ds.remove_paths, [[LAYOUT.site_dir]])],
    }


def task_serve():
    """Serve cache/site on web.host:web.port (127.0.0.1:8000) and print the URL."""
    from pipeline import serve

    return {
        "actions": [ds.python_stage(serve.serve, LAYOUT.site_dir, CFG.web.host, CFG.web.port)],
        "uptodate": [False],
        "verbosity": 2,
    }


def task_gpu_run():
    """Run the built site headless on this machine's GPU (Dawn): load times, per-call and per-image times, PNG."""
    from pipeline import gpu_run

    out = CACHE / "gpu-run" / f"{Path(CFG.model.name).name}-{CFG.model.dtype}"
    return {
        "actions": [ds.python_stage(gpu_run.run_site, LAYOUT.site_dir, out)],
        "task_dep": ["site"],
        "uptodate": [False],
        "verbosity": 2,
    }
