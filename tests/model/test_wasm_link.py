"""pipeline.model.wasm_link: the emcc link against the precompiled runtime, and exporting TVM executables as wasm objects.

Real tests (a Relax matmul+add+relu built with the installed TVM wheel, linked, run in Node) need the built tvmjs
runtime: see tests/toolchain/test_tvmjs_runtime.py for how they obtain a TVM source and when they skip.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.model import wasm_link as wl
from pipeline.errors import WebsdError
from pipeline.toolchain.tvmjs_runtime import RuntimeArtifacts

from tests.fixtures import matmul_add_relu
from tests.toolchain.test_tvmjs_runtime import real, tvm_src, tvmjs_runtime  # noqa: F401  (session fixtures; runtime cached)

NODE_RUNNER = Path(__file__).parent.parent / "node" / "run_relax_vm.cjs"


# --- pure logic ---------------------------------------------------------------------------------------------------

def test_dev_links_at_O1_and_ship_at_O3_with_runtime_objects_first(tmp_path):
    rt_objs = [tmp_path / "wasm_runtime.o", tmp_path / "tvmjs_support.o"]
    model = [tmp_path / "lib0.o", tmp_path / "devc.o"]
    dev = wl.link_command("emcc", rt_objs, model, tmp_path / "m.wasm", "dev")
    ship = wl.link_command("emcc", rt_objs, model, tmp_path / "m.wasm", "ship")
    assert "-O1" in dev and "-O3" not in dev
    assert "-O3" in ship and "-O1" not in ship
    objs = [a for a in dev if a.endswith(".o")]
    assert objs == [str(p) for p in rt_objs + model]
    assert dev[dev.index("-o") + 1] == str(tmp_path / "m.wasm")
    assert not any(a.endswith(".bc") for a in dev)


def test_unknown_profile_is_rejected(tmp_path):
    with pytest.raises(WebsdError, match="dev, ship"):
        wl.link_command("emcc", [], [], tmp_path / "m.wasm", "fast")


def test_link_flags_match_tvms_create_tvmjs_wasm(monkeypatch, tmp_path):
    """Same -s settings as the installed TVM's create_tvmjs_wasm (captured, not run), minus its bitcode libs."""
    emcc_mod = pytest.importorskip("tvm.support.emcc", reason="the TVM wheel is not installed")
    captured = {}

    class FakePopen:
        def __init__(self, cmd, **_kw):
            captured["cmd"] = cmd
            self.returncode = 0

        def communicate(self):
            return b"", None

    monkeypatch.setattr(emcc_mod.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(emcc_mod, "find_wasm_lib", lambda name, optional=False: [str(tmp_path / name)])
    emcc_mod.create_tvmjs_wasm(str(tmp_path / "m.wasm"), [str(tmp_path / "lib0.o")])
    theirs = captured["cmd"]
    ours = wl.link_command("emcc", [], [tmp_path / "lib0.o"], tmp_path / "m.wasm", "ship")

    def settings(cmd):
        return sorted(cmd[i + 1] for i, a in enumerate(cmd) if a == "-s")

    def flags(cmd):
        return sorted(a for a in cmd if a.startswith("-") and a not in ("-s", "-o"))

    assert settings(ours) == settings(theirs)
    assert flags(ours) == flags(theirs)
    assert emcc_mod.create_tvmjs_wasm.object_format == "bc"  # why we export with our own "o" fcompile


def test_missing_emcc_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(WebsdError, match=r"^emcc not found: run \./setup\.sh"):
        wl.link_wasm([tmp_path / "lib0.o"], tmp_path / "tvmjs", tmp_path / "m.wasm")
    assert not (tmp_path / "m.wasm").exists()


def test_objects_come_from_a_list_a_directory_or_a_tar(tmp_path):
    d = tmp_path / "objs"
    d.mkdir()
    for name in ("lib0.o", "devc.o"):
        (d / name).write_bytes(b"\0asm")
    (d / "notes.txt").write_text("ignored")
    tar_path = tmp_path / "m.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(d / "lib0.o", arcname="lib0.o")
        tar.add(d / "devc.o", arcname="devc.o")
    work = tmp_path / "work"
    work.mkdir()
    assert [p.name for p in wl._expand_objects(d, work)] == ["devc.o", "lib0.o"]
    from_tar = wl._expand_objects(tar_path, work)
    assert [p.name for p in from_tar] == ["devc.o", "lib0.o"] and all(p.is_relative_to(work) for p in from_tar)
    assert wl._expand_objects([d / "lib0.o"], work) == [d / "lib0.o"]


def test_missing_or_empty_objects_name_the_compile_stage(tmp_path):
    with pytest.raises(WebsdError, match="compile stage"):
        wl._expand_objects(tmp_path / "nope.tar", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WebsdError, match="compile stage"):
        wl._expand_objects(tmp_path / "empty", tmp_path)


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _wasm_with_imports(imports: list[tuple[str, str, bytes]]) -> bytes:
    """A minimal wasm module: a type section, then an import section of (module, name, kind+descriptor)."""
    def name(text: str) -> bytes:
        return _leb(len(text)) + text.encode()

    def section(sid: int, body: bytes) -> bytes:
        return bytes([sid]) + _leb(len(body)) + body

    types = section(1, b"\x01\x60\x00\x00")  # one type: () -> ()
    body = _leb(len(imports)) + b"".join(name(m) + name(n) + desc for m, n, desc in imports)
    return b"\0asm\x01\0\0\0" + types + section(2, body)


FUNC, MEMORY, GLOBAL = b"\x00\x00", b"\x02\x01\x02\x80\x01", b"\x03\x7f\x00"


def test_wasm_imports_reads_the_import_section(tmp_path):
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(_wasm_with_imports([("wasi_snapshot_preview1", "fd_write", FUNC), ("env", "memory", MEMORY),
                                         ("env", "g", GLOBAL), ("env", "f" * 200, FUNC)]))
    assert wl.wasm_imports(wasm) == [("env", "f" * 200, "function"), ("env", "g", "global"),
                                     ("env", "memory", "memory"), ("wasi_snapshot_preview1", "fd_write", "function")]
    (tmp_path / "x.wasm").write_bytes(b"BC\xc0\xde")
    with pytest.raises(WebsdError, match="not a wasm module"):
        wl.wasm_imports(tmp_path / "x.wasm")


def _fake_runtime(root: Path, imports) -> RuntimeArtifacts:
    art = RuntimeArtifacts.at(root)
    (root / "objects").mkdir(parents=True)
    for path in art.files():
        path.write_bytes(b"x")
    art.runtime_wasm.write_bytes(_wasm_with_imports(imports))
    art.stamp.write_text("{}")
    return art


def test_link_refuses_a_module_importing_what_the_runtime_lacks(tmp_path, monkeypatch):
    """ERROR_ON_UNDEFINED_SYMBOLS=0 turns a missing symbol into an import; catch it at link, not in the page."""
    import sys

    runtime = _fake_runtime(tmp_path / "tvmjs", [("env", "TVMFFIWasmSafeCall", FUNC)])
    linked = tmp_path / "linked.wasm"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "emcc").write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                                 f"shutil.copy({str(linked)!r}, sys.argv[sys.argv.index('-o') + 1])\n")
    (bindir / "emcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    (tmp_path / "lib0.o").write_bytes(b"\0asm")

    linked.write_bytes(_wasm_with_imports([("env", "TVMFFIWasmSafeCall", FUNC)]))
    out = wl.link_wasm([tmp_path / "lib0.o"], runtime.dir, tmp_path / "ok.wasm", nice=0)
    assert out.read_bytes() == linked.read_bytes()

    linked.write_bytes(_wasm_with_imports([("env", "TVMFFIWasmSafeCall", FUNC), ("env", "expf_missing", FUNC)]))
    with pytest.raises(WebsdError, match=r"bad\.wasm imports env\.expf_missing, which the tvmjs runtime does not"):
        wl.link_wasm([tmp_path / "lib0.o"], runtime.dir, tmp_path / "bad.wasm", nice=0)
    assert not (tmp_path / "bad.wasm").exists()
    assert "expf_missing" not in (tmp_path / "ok.wasm").read_bytes().decode("latin-1")


class _FakeExecutable:
    """Calls fcompile the way tvm's export_library does: object files written in workspace_dir."""

    def __init__(self, suffix="o"):
        self.suffix = suffix
        self.formats = []

    def export_library(self, file_name, *, fcompile, workspace_dir, **kwargs):
        self.formats.append(fcompile.object_format)
        files = []
        for name in ("lib0", "devc"):
            path = Path(workspace_dir) / f"{name}.{self.suffix}"
            path.write_bytes(b"\0asm" + name.encode())
            files.append(str(path))
        return fcompile(file_name, files, **kwargs)


def test_export_writes_object_files_to_a_tar_or_a_directory(tmp_path):
    exe = _FakeExecutable()
    assert wl.export_wasm_objects(exe, tmp_path / "m.tar") == ["lib0.o", "devc.o"]
    assert exe.formats == ["o"]
    with tarfile.open(tmp_path / "m.tar") as tar:
        assert sorted(tar.getnames()) == ["devc.o", "lib0.o"]
    first = (tmp_path / "m.tar").read_bytes()
    wl.export_wasm_objects(exe, tmp_path / "m.tar")
    assert (tmp_path / "m.tar").read_bytes() == first  # same objects, same bytes
    wl.export_wasm_objects(exe, tmp_path / "objs")
    assert (tmp_path / "objs" / "lib0.o").read_bytes() == b"\0asmlib0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tar", "objs"]  # no temp left


def test_export_refuses_non_object_output_and_writes_nothing(tmp_path):
    with pytest.raises(WebsdError, match="wasm32"):
        wl.export_wasm_objects(_FakeExecutable(suffix="bc"), tmp_path / "m.tar")
    assert list(tmp_path.iterdir()) == []


# --- real: TVM wheel + built runtime ------------------------------------------------------------------------------

WASM32_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}


@pytest.fixture(scope="module")
def model_tars(tmp_path_factory):
    tvm = pytest.importorskip("tvm", reason="the TVM wheel is not installed")
    out = tmp_path_factory.mktemp("model")
    targets = {"webgpu": tvm.target.Target({"kind": "webgpu"}, host=WASM32_HOST),
               "llvm": tvm.target.Target(WASM32_HOST)}
    tars = {}
    for name, target in targets.items():
        tars[name] = out / f"{name}.tar"
        assert wl.export_wasm_objects(tvm.compile(matmul_add_relu(), target), tars[name]) == ["lib0.o", "devc.o"]
    return tars


@real
def test_real_webgpu_module_links_with_only_runtime_imports(tvmjs_runtime, model_tars, tmp_path):
    out = wl.link_wasm(model_tars["webgpu"], tvmjs_runtime, tmp_path / "m.wasm", "dev")
    data = out.read_bytes()
    assert data[:4] == b"\0asm" and b"linking" not in data  # a linked module, not an object
    assert b"@compute" in data  # the WGSL kernels are packed into the module
    assert set(wl.wasm_imports(out)) <= set(wl.wasm_imports(tvmjs_runtime.runtime_wasm))
    assert (tmp_path / "m.wasm.link.log").is_file()


@real
def test_real_cpu_module_runs_in_node_and_matches_numpy(tvmjs_runtime, model_tars, tmp_path):
    wasm = wl.link_wasm(model_tars["llvm"], tvmjs_runtime.dir, tmp_path / "cpu.wasm", "dev")
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype("float32") for s in ((4, 8), (8, 16), (16,)))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([{"shape": list(a.shape), "dtype": "float32", "data": a.ravel().tolist()}
                                  for a in (x, w, b)]))
    out = subprocess.run(["node", str(NODE_RUNNER), str(tvmjs_runtime.bundle_js), str(wasm), str(inputs)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [4, 16]
    got = np.array(result["data"], dtype="float32").reshape(4, 16)
    np.testing.assert_allclose(got, np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)


@real
def test_real_dev_link_takes_seconds_and_ship_is_smaller(tvmjs_runtime, model_tars, tmp_path):
    times = []
    for i in range(5):
        start = time.monotonic()
        wl.link_wasm(model_tars["webgpu"], tvmjs_runtime, tmp_path / "dev.wasm", "dev")
        times.append(time.monotonic() - start)
    median = statistics.median(times)
    start = time.monotonic()
    wl.link_wasm(model_tars["webgpu"], tvmjs_runtime, tmp_path / "ship.wasm", "ship")
    ship_s = time.monotonic() - start
    dev_size, ship_size = (tmp_path / "dev.wasm").stat().st_size, (tmp_path / "ship.wasm").stat().st_size
    print(f"dev link median {median:.2f} s of {[round(t, 2) for t in times]}; ship link {ship_s:.1f} s; "
          f"size dev {dev_size} B, ship {ship_size} B")
    assert median < 15, f"dev link took {median:.1f} s: is the runtime linked as bitcode (LTO) again?"
    assert ship_size < dev_size
