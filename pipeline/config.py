"""The one typed configuration of the pipeline.

Values are layered, later wins:
  1. defaults in this file,
  2. ``[tool.websd.<section>]`` in the project's ``pyproject.toml``,
  3. the user config ``$XDG_CONFIG_HOME/websd/config.toml`` (machine-specific things such as a TVM mirror),
  4. environment variables ``WEBSD_<SECTION>_<KEY>`` (e.g. ``WEBSD_TVM_MIRROR``),
  5. doit command-line variables ``section.key=value`` (e.g. ``doit model.dtype=float16``).

Everything is validated on load: an unknown key or a bad value is a one-line ``WebsdError`` naming the key.
This module only uses the standard library so that loading ``dodo.py`` stays fast.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import WebsdError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_TVM_GIT = "https://github.com/apache/tvm"


def _choice(*values: str) -> dict:
    return {"choices": values}


@dataclass(frozen=True)
class TvmConfig:
    # The single TVM version setting: the git tag (v<version>), the apache-tvm wheel the setup installs, and the
    # apache-tvm-ffi release (see pipeline/toolchain/versions.py) all follow it.
    version: str = "0.26.0"
    git: str = UPSTREAM_TVM_GIT
    # Default: the release tag of ``version``.
    ref: str = ""
    # A local path or URL of a TVM git mirror that replaces ``git`` (air-gapped builds). Usually set per machine:
    # WEBSD_TVM_MIRROR or the user config.
    mirror: str = ""
    # Likewise for the 3rdparty/tvm-ffi submodule (a mirror of apache/tvm-ffi). Without it, an unreachable
    # submodule remote falls back to the apache-tvm-ffi sdist (enough for the web runtime; see README).
    ffi_mirror: str = ""
    # Mirrors of the other submodules a TVM release needs (v0.21: dmlc-core, rang, dlpack), as comma-separated
    # ``name=path-or-URL`` pairs, name = the repository name in .gitmodules' URL (e.g.
    # ``dmlc-core=/srv/dmlc-core.git,rang=/srv/rang.git,dlpack=/srv/dlpack.git``); ``tvm-ffi=`` works as ffi_mirror.
    submodule_mirrors: str = ""
    build: str = field(default="auto", metadata=_choice("auto", "source", "wheel"))
    llvm_config: str = "llvm-config-19"
    build_jobs: int = 0  # 0: ninja's default

    @property
    def resolved_ref(self) -> str:
        return self.ref or f"v{self.version}"

    @property
    def remote(self) -> str:
        return self.mirror or self.git

    def __post_init__(self):
        self.submodule_mirror("")  # a malformed tvm.submodule_mirrors is an error at load time
        if self.build_jobs < 0:
            raise WebsdError(f"config tvm.build_jobs must be 0 (ninja's default) or a number of jobs; got "
                             f"{self.build_jobs}")

    def submodule_mirror_map(self) -> dict[str, str]:
        """``tvm.submodule_mirrors`` as ``{repository name: mirror}``."""
        mirrors = {}
        for item in filter(None, (i.strip() for i in self.submodule_mirrors.split(","))):
            name, sep, url = item.partition("=")
            if not sep or not name.strip() or not url.strip():
                raise WebsdError(f"config tvm.submodule_mirrors: expected name=path pairs separated by commas, "
                                 f"got {item!r}")
            mirrors[name.strip()] = url.strip()
        return mirrors

    def submodule_mirror(self, repo_name: str) -> str:
        """The configured mirror of a submodule by its repository name ('' when none)."""
        if repo_name == "tvm-ffi" and self.ffi_mirror:
            return self.ffi_mirror
        return self.submodule_mirror_map().get(repo_name, "")


@dataclass(frozen=True)
class ModelConfig:
    # "tiny" (embedded, built from configs), "sd15-random" (SD v1.5 shapes, random weights) or a local
    # diffusers folder.
    name: str = "tiny"
    dtype: str = field(default="float32", metadata=_choice("float32", "float16"))
    image_size: int = 0  # square shorthand: width and height; 0: the model's own default (tiny: 64, SD v1.5: 512)
    width: int = 0  # pixels; 0: model.image_size, else the model's own
    height: int = 0  # pixels; 0: model.image_size, else the model's own
    seed: int = 0
    # the VAE decodes in overlapping, blended tiles of this many pixels (diffusers' enable_tiling; a multiple of 32
    # for SD): 0 = automatic, the largest tile (the VAE's sample_size, halved) whose activations fit the
    # webgpu.limits binding size in model.dtype, no tiling when the whole image fits (pipeline/submodels/vae_tiling.py)
    vae_tile: int = 0
    # LoRA files fused into the weights at build time: comma-separated ``path[:scale]`` (pipeline/model/lora.py)
    lora: str = ""
    # more sizes in the same site: comma-separated (a TOML list too) ``<n>`` or ``<width>x<height>``, e.g.
    # "512,768,512x768". Each gets its own unet and vae build (clip does not see the image size); all share the one
    # set of weight shards and the page switches between them without downloading weights again. The size above
    # (width/height/image_size) is the default and always in the site; empty: just that one (pipeline/sizes.py)
    sizes: str = field(default="", metadata={"list": True})
    # the llvm (CPU) build and the verify_* tasks that check it against PyTorch: "auto" = only for models small
    # enough for the unscheduled CPU build (tiny); an SD v1.5 UNet forward takes > 18 min there.
    verify: str = field(default="auto", metadata=_choice("auto", "on", "off"))

    def __post_init__(self):
        for key in ("image_size", "width", "height", "vae_tile"):
            if getattr(self, key) < 0:
                raise WebsdError(f"config model.{key} must be a number of pixels (0: the default); got "
                                 f"{getattr(self, key)}")
        self.size_list  # a malformed model.sizes is an error at load time

    @property
    def size_list(self) -> tuple[tuple[int, int], ...]:
        """``model.sizes`` as (width, height) pairs, in the given order; whether the model takes them is
        pipeline.sizes' check (it needs the model's config)."""
        pairs = []
        for item in filter(None, (i.strip() for i in self.sizes.split(","))):
            m = re.fullmatch(r"([1-9][0-9]*)(?:x([1-9][0-9]*))?", item)
            if not m:
                raise WebsdError(f"config model.sizes: {item!r} is not a size; write <n> or <width>x<height> "
                                 "(e.g. 512,512x768)")
            pair = (int(m[1]), int(m[2] or m[1]))
            if pair in pairs:
                raise WebsdError(f"config model.sizes lists {pair[0]}x{pair[1]} twice; list each size once")
            pairs.append(pair)
        return tuple(pairs)

    @property
    def size_key(self) -> str:
        """The image size as the output paths name it: ``default``, ``<n>`` (square), ``<width>x<height>``."""
        width, height = self.width or self.image_size, self.height or self.image_size
        if width == height:
            return str(width or "default")
        return f"{width or 'default'}x{height or 'default'}"


@dataclass(frozen=True)
class LinkConfig:
    # dev: wasm objects linked at -O1 (about a second); ship: adds wasm-opt -O3 for size (about a minute).
    profile: str = field(default="dev", metadata=_choice("dev", "ship"))


@dataclass(frozen=True)
class WebgpuConfig:
    # The WebGPU limits every kernel must fit (pipeline/webgpu/limits.py): "default" = WebGPU's default limits,
    # which any conforming browser offers; "desktop" = what tvmjs asks for (desktop Chrome grants it).
    limits: str = field(default="default", metadata=_choice("default", "desktop"))
    # How dlight's Matmul rule tiles matmuls and convolutions (pipeline.webgpu.kernels.MATMUL_CONFIGS, measured in
    # benchmarks/results/webgpu-sd15-random-h200.md).
    matmul: str = field(default="dlight", metadata=_choice("dlight", "k16", "cuda", "wide"))
    # Which kernels this build compiles: "default" (every kernel TVM's, any WebGPU adapter) or "subgroup-matrix"
    # (matmuls on the experimental chromium-experimental-subgroup-matrix feature, pipeline/webgpu/subgroup_matrix/)
    kernels: str = field(default="default", metadata=_choice("default", "subgroup-matrix"))
    # More compiled variants in the same site, comma-separated kernel sets (e.g. "subgroup-matrix"): each gets its
    # own compile and link per submodel at the default size, shares the weight shards, and the page picks the
    # fastest the adapter supports at run time (pipeline/variants.py). Empty: the one build above.
    variants: str = field(default="", metadata={"list": True})
    # The adapter class the subgroup-matrix kernels are built for: its matrix shape and subgroup size
    # (pipeline.webgpu.subgroup_matrix.PROFILES; "lavapipe" is for CI's software driver)
    subgroup_matrix: str = field(default="nvidia", metadata=_choice("nvidia", "lavapipe"))

    def __post_init__(self):
        for name in self.variant_list:
            if name != "subgroup-matrix":
                raise WebsdError(f"config webgpu.variants: {name!r} is not a kernel set; use subgroup-matrix")

    @property
    def variant_list(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.strip() for v in self.variants.split(",") if v.strip()))


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise WebsdError(f"config web.port must be a TCP port, 1-65535 (0: any free port); got {self.port}")


@dataclass(frozen=True)
class CacheConfig:
    # The shared build cache (pipeline/remote_cache.py): s3://bucket/prefix on any S3-compatible store. Endpoint and
    # credentials are the standard AWS ones (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/...), never here.
    remote: str = ""
    # read: use entries others stored; read-write: also store what this machine builds (CI, a release machine)
    remote_mode: str = field(default="read", metadata=_choice("off", "read", "read-write"))

    def __post_init__(self):
        if self.remote and not (self.remote.startswith("s3://") and self.remote[5:].split("/", 1)[0]):
            raise WebsdError(f"config cache.remote must look like s3://bucket/prefix; got {self.remote!r}")


@dataclass(frozen=True)
class PublishConfig:
    # where `doit publish` uploads the site: s3://bucket/prefix (same AWS endpoint and credentials as the cache)
    remote: str = ""

    def __post_init__(self):
        if self.remote and not (self.remote.startswith("s3://") and self.remote[5:].split("/", 1)[0]):
            raise WebsdError(f"config publish.remote must look like s3://bucket/prefix; got {self.remote!r}")


@dataclass(frozen=True)
class PathsConfig:
    cache: str = "cache"  # relative to the project root

    @property
    def cache_dir(self) -> Path:
        return (PROJECT_ROOT / self.cache).resolve()


@dataclass(frozen=True)
class Config:
    tvm: TvmConfig = TvmConfig()
    model: ModelConfig = ModelConfig()
    link: LinkConfig = LinkConfig()
    webgpu: WebgpuConfig = WebgpuConfig()
    web: WebConfig = WebConfig()
    paths: PathsConfig = PathsConfig()
    cache: CacheConfig = CacheConfig()
    publish: PublishConfig = PublishConfig()

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)

    def subset(self, *dotted: str) -> dict:
        """The values one stage reads: its ``uptodate`` depends on exactly these."""
        return {k: self.get(k) for k in dotted}


_SECTION_TYPES = {"tvm": TvmConfig, "model": ModelConfig, "link": LinkConfig, "webgpu": WebgpuConfig,
                  "web": WebConfig,
                  "paths": PathsConfig, "cache": CacheConfig, "publish": PublishConfig}


def known_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, t in _SECTION_TYPES.items() for f in dataclasses.fields(t)]


def _coerce(dotted: str, value: Any, fld: dataclasses.Field, source: str) -> Any:
    want = fld.type if isinstance(fld.type, type) else {"str": str, "int": int, "bool": bool}[fld.type]
    if want is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise WebsdError(f"config {dotted} (from {source}) must be an integer, got {value!r}")
        try:
            value = int(value)
        except ValueError:
            raise WebsdError(f"config {dotted} (from {source}) must be an integer, got {value!r}") from None
    elif want is str:
        if fld.metadata.get("list") and isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
            value = ",".join(str(v) for v in value)  # a TOML list of a comma-separated key
        if not isinstance(value, str):
            raise WebsdError(f"config {dotted} (from {source}) must be a string, got {value!r}")
    choices = fld.metadata.get("choices")
    if choices and value not in choices:
        raise WebsdError(f"config {dotted} (from {source}) must be one of {', '.join(choices)}; got {value!r}")
    return value


def _apply(values: dict[str, dict], layer: Mapping[str, Any], source: str) -> None:
    """Merge one flat ``{"section.key": value}`` layer into ``values`` after validating it."""
    for dotted, value in layer.items():
        section, _, key = dotted.partition(".")
        fields = {f.name: f for f in dataclasses.fields(_SECTION_TYPES[section])} if section in _SECTION_TYPES \
            else None
        if not fields or key not in fields:
            raise WebsdError(f"unknown config key {dotted!r} in {source}; known keys: {', '.join(known_keys())}")
        values[section][key] = _coerce(dotted, value, fields[key], source)


def _flatten_toml(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat = {}
    for section, body in table.items():
        if not isinstance(body, Mapping):
            raise WebsdError(f"{source}: [{section}] must be a table of keys (e.g. [tool.websd.tvm] ref = \"v0.26.0\")")
        for key, value in body.items():
            flat[f"{section}.{key}"] = value
    return flat


def user_config_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "websd" / "config.toml"


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise WebsdError(f"{path} is not valid TOML ({e}); fix or remove it") from None


def load_config(
    pyproject: Path | None = PROJECT_ROOT / "pyproject.toml",
    user_config: Path | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> Config:
    """Build the validated ``Config`` from all layers (see module doc)."""
    env = os.environ if env is None else env
    values: dict[str, dict] = {s: {} for s in _SECTION_TYPES}
    if pyproject is not None:
        websd = _read_toml(pyproject).get("tool", {}).get("websd", {})
        _apply(values, _flatten_toml(websd, f"{pyproject.name} [tool.websd]"), f"{pyproject.name} [tool.websd]")
    upath = user_config if user_config is not None else user_config_path(env)
    _apply(values, _flatten_toml(_read_toml(upath), str(upath)), str(upath))
    env_layer = {}
    for name, value in env.items():
        if name.startswith("WEBSD_") and name.count("_") >= 2:
            section, _, key = name[len("WEBSD_"):].lower().partition("_")
            if section in _SECTION_TYPES:
                env_layer[f"{section}.{key}"] = value
    _apply(values, env_layer, "the environment (WEBSD_<SECTION>_<KEY>)")
    _apply(values, dict(cli or {}), "the doit command line")
    return Config(**{s: _SECTION_TYPES[s](**v) for s, v in values.items()})


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.config get tvm.version``: lets setup.sh read the single version setting."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config()
        if len(argv) == 2 and argv[0] == "get":
            print(cfg.get(argv[1]))
            return 0
        if not argv or argv == ["show"]:
            for key in known_keys():
                print(f"{key} = {cfg.get(key)!r}")
            return 0
    except WebsdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("usage: python -m pipeline.config [show | get section.key]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
