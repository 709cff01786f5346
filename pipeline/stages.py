"""The one stage table: each stage of the build is a ``Stage`` record naming the module that implements it.

Every stage module has the same shape (checked when this table loads):

    run(cfg[, sub])           does the stage's work
    outputs(cfg[, sub])       files written (the last one last): a missing one makes the stage stale
    inputs(cfg[, sub])        files read: a change of their content makes the stage stale; producers run first
                              (optional: none)
    CONFIG_KEYS               config read beyond its inputs, other than the keys in the output paths (optional: none)
    fingerprint(cfg[, sub])   a value; stale when it changes, e.g. TVM source trees, LoRA scales (optional)
    cleans(cfg[, sub])        what ``doit clean`` removes (optional: the outputs)

``sub`` (the submodel) is there exactly when the record says ``per_submodel``. dodo.py turns records into doit
tasks and ``python -m pipeline.run_stage`` runs them; nothing else knows stages. A stage's code is derived, not
listed: see pipeline.code_deps.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from . import code_deps, sizes, submodels, variants
from .config import Config
from .errors import WebsdError
from .model import compile, shard, trace, verify, verify_policy, wasm_link, weights
from .page import gpu_run, publish, serve, site, tokenizer
from .toolchain import tvm_build, tvm_checkout, tvmjs_runtime

_INTERFACE = ("run", "outputs", "inputs", "cleans", "fingerprint")  # called as f(cfg) or, per submodel, f(cfg, sub)


def _positional(fn: Callable) -> int:
    """How many positional parameters ``fn`` needs (those without a default)."""
    return sum(1 for p in inspect.signature(fn).parameters.values()
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str
    module: ModuleType  # the stage module (see module doc)
    per_submodel: bool = False  # one task per submodel; the module's functions take (cfg, sub)
    runs_tvm: bool = False  # imports the TVM tvm_build selected: stale when that selection changes
    after: tuple[str, ...] = ()  # stages to run first although nothing they write is read
    in_process: bool = False  # run inside doit's process (light stages); else a child process
    shared_outputs: bool = False  # outputs at one path for every config (the site): path keys count as config
    default: Callable[[Config], bool] = lambda cfg: True  # part of a plain `doit`
    always: bool = False  # never up to date (serve, gpu_run)
    expensive: bool = False  # `doit clean` keeps its outputs unless the task is named
    # looked up in / stored to the remote build cache (cache.remote; pipeline.remote_cache) before running; never
    # for an always-run stage
    remote_cache: bool = True
    # its output depends on the image size: run again for each extra size of model.sizes (pipeline.sizes), for the
    # submodels that see the size; the other stages' outputs (weights, shards) serve every size
    per_size: bool = False
    # its output depends on the kernel set: run again for each extra variant of webgpu.variants (pipeline.variants)
    per_variant: bool = False

    def __post_init__(self):
        needs = ("run",) if self.always else ("run", "outputs")  # an always-run stage may write nothing
        if not all(hasattr(self.module, name) for name in needs):
            raise TypeError(f"stage {self.name}: {self.module.__name__} needs {' and '.join(needs)}")
        want = 2 if self.per_submodel else 1
        for name in _INTERFACE:
            fn = getattr(self.module, name, None)
            if fn is not None and _positional(fn) != want:
                raise TypeError(f"stage {self.name}: {self.module.__name__}.{name} takes {_positional(fn)} "
                                f"positional arguments, a {'per-submodel ' if self.per_submodel else ''}stage "
                                f"function takes {want} ({'cfg, sub' if self.per_submodel else 'cfg'})")

    def _call(self, name: str, cfg: Config, sub: str | None):
        fn = getattr(self.module, name)
        return fn(cfg, sub) if self.per_submodel else fn(cfg)

    def run(self, cfg: Config, sub: str | None = None):
        return self._call("run", cfg, sub)

    def outputs(self, cfg: Config, sub: str | None = None) -> list[Path]:
        return self._call("outputs", cfg, sub) if hasattr(self.module, "outputs") else []

    def inputs(self, cfg: Config, sub: str | None = None) -> list[Path]:
        return self._call("inputs", cfg, sub) if hasattr(self.module, "inputs") else []

    def cleans(self, cfg: Config, sub: str | None = None) -> list[Path]:
        """What ``doit clean`` removes: the module's ``cleans``, else the outputs."""
        return self._call("cleans" if hasattr(self.module, "cleans") else "outputs", cfg, sub)

    @property
    def config_keys(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, "CONFIG_KEYS", ()))

    @property
    def has_fingerprint(self) -> bool:
        return hasattr(self.module, "fingerprint")

    def fingerprint(self, cfg: Config, sub: str | None = None):
        return self._call("fingerprint", cfg, sub)

    def code_files(self, cfg: Config, sub: str | None = None) -> list[Path]:
        """The source files the stage's result depends on (pipeline.code_deps)."""
        return code_deps.code_files(self.module.__name__, cfg, sub)

    @property
    def cached_remotely(self) -> bool:
        return self.remote_cache and not self.always

    @property
    def tools(self) -> tuple[str, ...]:
        """Command-line tools whose version decides the stage's bytes (the module's ``REMOTE_CACHE_TOOLS``)."""
        return tuple(getattr(self.module, "REMOTE_CACHE_TOOLS", ()))

    def task_name(self, sub: str | None = None) -> str:
        return f"{self.name}_{sub}" if self.per_submodel else self.name

    def subs(self) -> tuple:
        return submodels.names() if self.per_submodel else (None,)


STAGES: tuple[Stage, ...] = (
    # not in the remote cache: a git checkout (its .git names this machine's remotes) comes from the mirror faster
    # than a tree of files from a bucket, and tvm_build's selection names absolute paths of this tree
    Stage("tvm_checkout", "Check out Apache TVM at tvm.ref (tvm.git or tvm.mirror) with its submodules and backports",
          tvm_checkout, in_process=True, expensive=True, remote_cache=False),
    Stage("tvm_build", "Select the TVM later stages use: the apache-tvm wheel, or a cmake/ninja build (tvm.build)",
          tvm_build, in_process=True, expensive=True, after=("tvm_checkout",), remote_cache=False),
    Stage("tvmjs_runtime", "Build TVM's web runtime with emscripten (wasm objects, JS glue, tvmjs.bundle.js)",
          tvmjs_runtime, in_process=True, expensive=True, after=("tvm_checkout",)),
    Stage("weights", "Materialize the embedded model (tiny / sd15-random) as a diffusers folder", weights),
    Stage("trace", "torch.export the submodel's wrapper (the graph; no TVM involved)", trace, per_submodel=True,
          per_size=True),
    Stage("compile", "Import the trace into TVM Relax and build it for WebGPU (and llvm when verified)", compile,
          per_submodel=True, runs_tvm=True, per_size=True, per_variant=True),
    Stage("link", "Link the compiled submodel with the tvmjs runtime objects into the .wasm the page loads",
          wasm_link, per_submodel=True, per_size=True, per_variant=True),
    Stage("shard", "Write the submodel's weights as a tvmjs tensor cache (32 MB shards)", shard, per_submodel=True,
          after=("tvm_build",)),
    Stage("verify", "Check the TVM llvm build against PyTorch on the same inputs", verify, per_submodel=True,
          runs_tvm=True, default=verify_policy.cpu_verification),
    Stage("tokenizer", "Write the CLIP tokenizer files the page tokenizes with", tokenizer),
    # not in the remote cache: seconds of local copies into a versioned folder behind a symlink
    Stage("site", "Assemble the site: page, tvmjs.bundle.js, each .wasm and tensor cache, manifest.json", site,
          in_process=True, shared_outputs=True, remote_cache=False),
    Stage("serve", "Serve the last complete site on web.host:web.port (127.0.0.1:8000)", serve, in_process=True,
          always=True, default=lambda cfg: False),
    Stage("gpu_run", "Run the site headless on this machine's GPU (Dawn): timings and image", gpu_run,
          in_process=True, always=True, default=lambda cfg: False, after=("site",)),
    Stage("publish", "Upload the last complete site to publish.remote (s3://bucket/prefix), ready to serve", publish,
          in_process=True, always=True, default=lambda cfg: False),  # like serve: `doit site publish` builds first
)
BY_NAME = {s.name: s for s in STAGES}


@dataclass(frozen=True)
class StageTask:
    """One task of the build: a stage, its submodel, and the config it runs with (the site's, or the site's at one
    extra size of model.sizes, or with one extra kernel set of webgpu.variants)."""
    stage: Stage
    sub: str | None
    cfg: Config
    size: sizes.Size | None = None  # an extra size; None: the default size
    variant: str | None = None  # an extra kernel set; None: the site's own

    @property
    def name(self) -> str:
        base = self.stage.task_name(self.sub)
        if self.size:
            return f"{base}_{self.size.name}"
        return f"{base}_{variants.task_suffix(self.variant)}" if self.variant else base

    def overrides(self, cli: dict[str, str]) -> dict[str, str]:
        """The command-line config of its child process: doit's, at this task's size or kernel set."""
        if self.size:
            return {**cli, **sizes.overrides(self.size)}
        return {**cli, **variants.overrides(self.variant)} if self.variant else dict(cli)


def tasks(cfg: Config) -> list[StageTask]:
    """Every task of the build: each stage per submodel, then the size-dependent ones again per extra size, then the
    kernel-dependent ones again per extra variant."""
    out = [StageTask(s, sub, cfg) for s in STAGES for sub in s.subs()]
    for kernels in variants.extra(cfg):
        out += [StageTask(s, sub, variants.at_variant(cfg, kernels), variant=kernels) for s in STAGES
                if s.per_variant for sub in s.subs()]
    for size in sizes.extra(cfg):
        size_cfg = sizes.at_size(cfg, size)
        out += [StageTask(s, sub, size_cfg, size) for s in STAGES if s.per_size
                for sub in s.subs() if submodels.get(sub).image_sized]
    return out


def get(name: str) -> Stage:
    if name not in BY_NAME:
        raise WebsdError(f"unknown stage {name!r}; choose one of {', '.join(BY_NAME)}")
    return BY_NAME[name]
