"""Turn a TVM-built Relax executable into a tvmjs ``.wasm``: export wasm object files, link them with the runtime.

Two steps so the model stages can cache the slow one (TVM compile + export) apart from the link:

* ``export_wasm_objects(executable, out)``: the executable's host code and its packed device modules (WGSL) as
  wasm object files (``object_format = "o"``). TVM's default is LLVM bitcode, but the wheel's LLVM 22 bitcode
  cannot be read by emscripten's LLVM; object files can.
* ``link_wasm(objects, runtime, out_wasm, profile)``: emcc link with the flags of TVM's ``create_tvmjs_wasm``,
  but against the runtime compiled once to wasm objects (pipeline.toolchain.tvmjs_runtime) instead of its bitcode, which
  costs ~80 s of LTO per link. Profile "dev" links at -O1 (~1 s, binaryen skipped), "ship" at -O3 (wasm-opt:
  ~1 min, about half the size). Kernels are LLVM -O3 code either way.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..errors import WebsdError
from ..fsutil import atomic_path
from ..procs import niced, require_tool, run_logged
from ..tarsafe import extract_all
from ..toolchain.tvmjs_runtime import RuntimeArtifacts, tool_env

CONFIG_KEYS = ("link.profile",)
REMOTE_CACHE_TOOLS = ("emcc",)  # its version decides the .wasm's bytes: part of the remote-cache key
PROFILES = ("dev", "ship")
PROFILE_OPT = {"dev": "-O1", "ship": "-O3"}
# tvm.support.emcc.create_tvmjs_wasm's flags, minus its -O3 (chosen per profile).
LINK_FLAGS = ("-std=c++17", "--no-entry", "-s", "WASM_BIGINT=1", "-s", "ERROR_ON_UNDEFINED_SYMBOLS=0",
              "-s", "STANDALONE_WASM=1", "-s", "ALLOW_MEMORY_GROWTH=1", "-s", "TOTAL_MEMORY=160MB")
OBJECT_FORMAT = "o"


class _CollectObjects:
    """An ``fcompile`` for ``export_library`` that keeps the object files instead of linking them."""

    object_format = OBJECT_FORMAT

    def __init__(self, dest: Path):
        self.dest = dest
        self.files: list[Path] = []

    def __call__(self, output: str, files: Sequence[str], **_kwargs: Any) -> None:
        for f in map(Path, files):
            if f.suffix != f".{OBJECT_FORMAT}":
                raise WebsdError(f"TVM exported {f.name}, not a wasm object file: the executable must be built "
                                 "with host target llvm -mtriple=wasm32-unknown-unknown-wasm")
            dst = self.dest / f.name
            shutil.copyfile(f, dst)
            self.files.append(dst)


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # same objects -> same tar bytes, so a content-hashing build tool sees "unchanged" and skips the link
    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
    return info


def export_wasm_objects(executable: Any, out: Path) -> list[str]:
    """Write the wasm object files of a ``tvm.compile`` result (host llvm wasm32) to ``out``.

    ``out`` is a directory, or a ``.tar`` file (one artifact for a build system to track). Written atomically.
    Returns the object file names (e.g. ``["lib0.o", "devc.o"]``).
    """
    out = Path(out)
    with atomic_path(out) as work, tempfile.TemporaryDirectory(prefix=".export.", dir=work.parent) as tmp:
        objdir = Path(tmp) / "objects" if out.suffix == ".tar" else work
        objdir.mkdir()
        collect = _CollectObjects(objdir)
        executable.export_library(str(Path(tmp) / "unused.wasm"), fcompile=collect,
                                  workspace_dir=str(Path(tmp)))
        if not collect.files:
            raise WebsdError("TVM exported no object files for the executable")
        if out.suffix == ".tar":
            with tarfile.open(work, "w", format=tarfile.PAX_FORMAT) as tar:
                for f in collect.files:
                    tar.add(f, arcname=f.name, filter=_reproducible)
        return [f.name for f in collect.files]


def _expand_objects(model_objects: Path | Sequence[Path], tmp: Path) -> list[Path]:
    """Object paths from a list of .o files, a directory of them, or a .tar written by export_wasm_objects."""
    items = [model_objects] if isinstance(model_objects, (str, Path)) else list(model_objects)
    objects: list[Path] = []
    for item in (Path(i).resolve() for i in items):
        if item.is_dir():
            objects += sorted(item.glob(f"*.{OBJECT_FORMAT}"))
        elif item.suffix == ".tar" and item.is_file():
            dest = tmp / f"tar{len(objects)}_{item.stem}"
            dest.mkdir()
            with tarfile.open(item) as tar:
                extract_all(tar, dest)
            objects += sorted(dest.glob(f"*.{OBJECT_FORMAT}"))
        elif item.is_file():
            objects.append(item)
        else:
            raise WebsdError(f"model objects {item} not found: run the compile stage first")
    if not objects:
        raise WebsdError(f"no .{OBJECT_FORMAT} files in {', '.join(map(str, items))}: re-run the compile stage")
    return objects


def link_command(emcc: str, runtime_objects: Sequence[Path], model_objects: Sequence[Path], out_wasm: Path,
                 profile: str = "dev") -> list[str]:
    """The emcc argument list: create_tvmjs_wasm's flags, runtime objects first (as TVM puts its libs first)."""
    if profile not in PROFILES:
        raise WebsdError(f"link profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    return [emcc, PROFILE_OPT[profile], *LINK_FLAGS, "-o", str(out_wasm), *map(str, runtime_objects),
            *map(str, model_objects)]


_IMPORT_KINDS = {0: "function", 1: "table", 2: "memory", 3: "global", 4: "tag"}


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def wasm_imports(wasm: Path) -> list[tuple[str, str, str]]:
    """(module, name, kind) of each import of a .wasm module, sorted; kinds named as JS's WebAssembly does."""
    data = Path(wasm).read_bytes()
    if data[:4] != b"\0asm":
        raise WebsdError(f"{wasm} is not a wasm module: delete it and re-run its stage")

    def name(pos: int) -> tuple[str, int]:
        length, pos = _uleb(data, pos)
        return data[pos:pos + length].decode(), pos + length

    def limits(pos: int) -> int:
        flags, pos = data[pos], pos + 1
        _, pos = _uleb(data, pos)
        return _uleb(data, pos)[1] if flags & 1 else pos

    pos = 8
    while pos < len(data):
        section, pos = data[pos], pos + 1
        size, pos = _uleb(data, pos)
        if section != 2:  # the import section
            pos += size
            continue
        count, pos = _uleb(data, pos)
        imports = []
        for _ in range(count):
            module, pos = name(pos)
            field, pos = name(pos)
            kind, pos = data[pos], pos + 1
            if kind == 0:
                pos = _uleb(data, pos)[1]
            elif kind == 1:
                pos = limits(pos + 1)
            elif kind == 2:
                pos = limits(pos)
            elif kind == 3:
                pos += 2
            elif kind == 4:
                pos = _uleb(data, pos + 1)[1]
            else:
                raise WebsdError(f"{wasm}: unknown import kind {kind}; is it a wasm module of a newer standard?")
            imports.append((module, field, _IMPORT_KINDS[kind]))
        return sorted(imports)
    return []


def link_wasm(model_objects: Path | Sequence[Path], runtime: RuntimeArtifacts | Path, out_wasm: Path,
              profile: str = "dev", *, nice: int = 10, check_imports: bool = True) -> Path:
    """Link model objects (list of .o, a directory or a .tar) with the tvmjs runtime into ``out_wasm``.

    ``runtime`` is a RuntimeArtifacts or its directory. With ``check_imports`` the result may import only what
    the runtime's JS glue provides: an unresolved symbol (allowed by ERROR_ON_UNDEFINED_SYMBOLS=0, as in TVM)
    would otherwise fail only when the page instantiates the module. Written atomically; the emcc log is kept
    beside ``out_wasm`` as ``<name>.link.log``.
    """
    out_wasm = Path(out_wasm).resolve()
    if profile not in PROFILES:
        raise WebsdError(f"link profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    env = tool_env()
    emcc = require_tool("emcc", env)
    art = runtime if isinstance(runtime, RuntimeArtifacts) else RuntimeArtifacts.load(Path(runtime))
    log = out_wasm.with_name(out_wasm.name + ".link.log")
    log.unlink(missing_ok=True)
    with atomic_path(out_wasm) as work, tempfile.TemporaryDirectory(prefix=".link.", dir=work.parent) as tmp:
        objects = _expand_objects(model_objects, Path(tmp))
        cmd = link_command(emcc, art.objects, objects, work, profile)
        run_logged(niced(cmd, nice), log, cwd=Path(tmp), env=env, what=f"emcc link of {out_wasm.name}")
        if check_imports:
            extra = sorted(set(wasm_imports(work)) - set(wasm_imports(art.runtime_wasm)))
            if extra:
                names = ", ".join(f"{m}.{n}" for m, n, _ in extra[:5])
                raise WebsdError(f"{out_wasm.name} imports {names}, which the tvmjs runtime does not provide: "
                                 "a kernel calls a function missing from the wasm runtime (check the model's ops)")
    return out_wasm


def inputs(cfg, sub: str) -> list[Path]:
    """Stage ``link_<sub>`` reads compile's WebGPU objects and the tvmjs runtime."""
    from ..layout import Layout
    from ..toolchain.tvmjs_runtime import runtime_stamp

    layout = Layout.from_config(cfg)
    return [layout.webgpu_objects(sub), runtime_stamp(layout.tvmjs_dir)]


def outputs(cfg, sub: str) -> list[Path]:
    from ..layout import Layout

    return [Layout.from_config(cfg).wasm_path(sub)]


def run(cfg, sub: str) -> str:
    """Stage ``link_<sub>``: the compiled wasm objects + the tvmjs runtime objects -> ``Layout.wasm_path(sub)``."""
    from ..layout import Layout

    layout = Layout.from_config(cfg)
    return str(link_wasm(layout.webgpu_objects(sub), layout.tvmjs_dir, layout.wasm_path(sub), cfg.link.profile))
