"""Where every artifact lives under the cache directory. Stages, tests and the page agree through this module."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .config import Config, TvmConfig

# the index of a tvmjs tensor cache (what the shard stage writes whatever TVM's writer calls it, and the page reads)
TENSOR_CACHE_JSON = "tensor-cache.json"


def model_key(model_name: str) -> str:
    """A directory name for a model: registry names as they are, a local folder as name + hash of its path."""
    if "/" not in model_name and "\\" not in model_name and not model_name.startswith("."):
        return model_name
    path = Path(model_name).expanduser().resolve()
    return f"local-{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def tvm_key(ref: str) -> str:
    """A directory name for a TVM ref (``v0.21.0``, a branch, a commit): each TVM gets its own checkout, build,
    runtime and model outputs, so switching ``tvm.version`` back finds everything still there."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", ref) or "unknown"


@dataclass(frozen=True)
class Layout:
    cache: Path
    model_name: str
    dtype: str
    size: str  # the image size: "default" (the model's own), "<n>" (square) or "<width>x<height>"
    tvm: str = TvmConfig().resolved_ref  # tvm_key of the TVM ref (default: the default tvm.version's tag)
    kernels: str = "default"  # webgpu.kernels: another kernel set compiles and links into folders of its own

    # the config keys that decide the output paths (from_config reads exactly these, and paths.cache): switching
    # one writes elsewhere, so switching back finds the outputs still there and re-runs nothing
    PATH_KEYS: ClassVar[tuple[str, ...]] = ("model.name", "model.dtype", "model.image_size", "model.width",
                                            "model.height", "tvm.version", "tvm.ref", "webgpu.kernels")

    @classmethod
    def from_config(cls, cfg: Config) -> "Layout":
        ref = f"{cfg.tvm.version}-{cfg.tvm.ref}" if cfg.tvm.ref else cfg.tvm.resolved_ref
        return cls(cfg.paths.cache_dir, cfg.model.name, cfg.model.dtype, cfg.model.size_key,
                   tvm_key(ref), cfg.webgpu.kernels)

    @property
    def variant(self) -> str:
        """Everything downstream of tracing depends on dtype and size, and on the TVM that compiles it."""
        return f"{self.dtype}-{self.size}-tvm-{self.tvm}"

    # --- TVM toolchain (one tree per TVM ref: cache/tvm/<ref>/) ----------------------------------
    @property
    def tvm_dir(self) -> Path:
        return self.cache / "tvm" / self.tvm

    @property
    def tvm_src(self) -> Path:
        return self.tvm_dir / "src"

    @property
    def tvm_checkout_stamp(self) -> Path:
        return self.tvm_dir / "checkout.json"

    @property
    def tvm_build_dir(self) -> Path:
        return self.tvm_dir / "build"

    @property
    def tvm_build_stamp(self) -> Path:
        """Which TVM later stages run against (wheel or source build): see pipeline.toolchain.tvm_build."""
        return self.tvm_dir / "build.json"

    @property
    def tvmjs_dir(self) -> Path:
        return self.cache / "tvmjs" / self.tvm

    # --- model stages --------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.cache / "models" / model_key(self.model_name)

    @property
    def variant_dir(self) -> Path:
        return self.model_dir / self.variant

    def trace_dir(self) -> Path:
        # tracing depends on the image size (input shapes) but not on the dtype
        return self.model_dir / f"trace-{self.size}"

    def trace_params(self, submodel: str) -> Path:
        """The traced entry function's weights (names, shapes, dtypes, component keys): what shard and verify read."""
        return self.trace_dir() / f"{submodel}.params.json"

    @property
    def _kernels_suffix(self) -> str:
        return "" if self.kernels == "default" else f"-{self.kernels}"

    def compile_dir(self) -> Path:
        return self.variant_dir / f"compile{self._kernels_suffix}"

    def webgpu_objects(self, submodel: str) -> Path:
        """compile's WebGPU build: wasm object files in a tar (pipeline.model.wasm_link links them)."""
        return self.compile_dir() / f"{submodel}.webgpu.tar"

    def compile_json(self, submodel: str) -> Path:
        """compile's description of the submodel's builds (written last)."""
        return self.compile_dir() / f"{submodel}.json"

    def wasm_path(self, submodel: str) -> Path:
        return self.variant_dir / f"wasm{self._kernels_suffix}" / f"{submodel}.wasm"

    def kernel_overrides(self, submodel: str) -> Path:
        """compile's WGSL overrides of a kernel set that TVM cannot emit ({entry point: WGSL}; none for default)."""
        return self.compile_dir() / f"{submodel}.kernels.json"

    def params_dir(self, submodel: str) -> Path:
        return self.variant_dir / "params" / submodel

    def tensor_cache_index(self, submodel: str) -> Path:
        """The shard stage's tensor cache index (the shards are listed in it)."""
        return self.params_dir(submodel) / TENSOR_CACHE_JSON

    @property
    def tokenizer_dir(self) -> Path:
        """The CLIP tokenizer files the page loads (per model: not per dtype, size or TVM)."""
        return self.model_dir / "tokenizer"

    def verify_report(self, submodel: str) -> Path:
        return self.variant_dir / "verify" / f"{submodel}.json"

    # --- the served web page -------------------------------------------------------------------
    @property
    def site_dir(self) -> Path:
        return self.cache / "site"
