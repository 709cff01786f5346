"""pipeline.toolchain.tvmjs_runtime: argument lists, tool and checkout errors, the stage's orchestration with stand-in tools,
and (with a real TVM source) the real runtime build.

Real tests (marked tvm_source + slow) need WEBSD_TVM_MIRROR (or tvm.mirror in the user config): the TVM release is
checked out through pipeline.toolchain.tvm_checkout into pytest's cache dir, and the runtime is built there once (~6 min on 2
cores) and reused while its sources (source_fingerprint), the emcc version and the flags are unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import needs_tvm_source

from pipeline.toolchain import tvmjs_runtime as rt
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.toolchain.tvm_checkout import source_fingerprint

WASM_MAGIC = b"\0asm"
BITCODE_MAGIC = b"BC\xc0\xde"


# --- shared fixtures for the real tests (tests/model/test_wasm_link.py imports them) ----------------------------------

def real(test):
    """Marks a test that needs a real TVM source and builds real artifacts."""
    return pytest.mark.slow(pytest.mark.tvm_source(needs_tvm_source(test)))


@pytest.fixture(scope="session")
def tvm_src(real_cache) -> Path:
    """The configured TVM release, checked out by the real ``doit`` (tests/conftest.py ``real_cache``)."""
    return real_cache / "tvm" / "v0.26.0" / "src"


@pytest.fixture(scope="session")
def tvmjs_runtime(real_cache) -> rt.RuntimeArtifacts:
    """The runtime the real ``doit tvmjs_runtime`` built (once per session, or kept via WEBSD_TEST_REAL_CACHE)."""
    return rt.RuntimeArtifacts.load(real_cache / "tvmjs" / "v0.26.0")


# --- pure logic ---------------------------------------------------------------------------------------------------

def test_missing_emcc_is_a_one_line_error_naming_setup(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(WebsdError, match=r"^emcc not found: run \./setup\.sh") as e:
        rt.build_tvmjs_runtime(tmp_path / "tvm", tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tool", ["node", "npm"])
def test_missing_node_tools_name_setup(tool, tmp_path):
    with pytest.raises(WebsdError, match=rf"^{tool} not found: run \./setup\.sh"):
        rt.require_tool(tool, {"PATH": str(tmp_path)})


def test_tool_env_appends_debian_node_modules_after_existing_node_path(monkeypatch, tmp_path):
    monkeypatch.setattr(rt, "DEBIAN_NODE_MODULES", tmp_path)
    env = rt.tool_env({"PATH": "/usr/bin", "NODE_PATH": "/mine"})
    assert env["NODE_PATH"].split(os.pathsep) == ["/mine", str(tmp_path)]
    assert rt.tool_env(env)["NODE_PATH"] == env["NODE_PATH"]  # idempotent


def test_compile_command_makes_wasm_objects_not_bitcode(tmp_path):
    cmd = rt.compile_command("emcc", tmp_path, "wasm_runtime", tmp_path / "o" / "wasm_runtime.o")
    assert cmd[0] == "emcc"
    assert "-c" in cmd and "-emit-llvm" not in cmd and not any(a.startswith("-flto") for a in cmd)
    assert ["-O3", "-std=c++17"] == [a for a in cmd if a in ("-O3", "-std=c++17")]
    assert cmd[-1] == str(tmp_path / "web" / "emcc" / "wasm_runtime.cc")
    assert cmd[cmd.index("-o") + 1] == str(tmp_path / "o" / "wasm_runtime.o")
    includes = [a[2:] for a in cmd if a.startswith("-I")]
    assert includes == [str((tmp_path / d).resolve()) for d in rt.INCLUDE_DIRS]


def test_glue_link_command_is_the_makefile_asyncify_link(tmp_path):
    objs = [tmp_path / "a.o", tmp_path / "b.o"]
    cmd = rt.glue_link_command("emcc", tmp_path, objs, tmp_path / "out" / "tvmjs_runtime.js")
    joined = " ".join(cmd)
    for flag in ("ASYNCIFY=1", "STANDALONE_WASM=1", "WASM_BIGINT=1", "ALLOW_MEMORY_GROWTH=1",
                 "ERROR_ON_UNDEFINED_SYMBOLS=0", "--no-entry", "-O3"):
        assert flag in joined
    assert cmd[cmd.index("--pre-js") + 1] == str(tmp_path / "web" / "emcc" / "preload.js")
    assert [str(o) for o in objs] == [a for a in cmd if a.endswith(".o")]


def test_niced_prefixes_only_when_asked():
    assert rt.niced(["emcc", "-c"], 0) == ["emcc", "-c"]
    if shutil.which("nice"):
        assert rt.niced(["emcc"], 10)[1:] == ["-n", "10", "emcc"]


def _fake_checkout(root: Path) -> Path:
    for d in rt.INCLUDE_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    emcc_dir = root / "web" / "emcc"
    emcc_dir.mkdir(parents=True)
    for name in rt.RUNTIME_SOURCES:
        (emcc_dir / f"{name}.cc").write_text(f"// {name}\n")
    (emcc_dir / "preload.js").write_text("var Module = {};\n")
    # stands in for TVM's script with the same command line: <in> <out> <mode>
    (emcc_dir / "decorate_as_wasi.py").write_text(textwrap.dedent("""\
        import sys
        open(sys.argv[2], "w").write("function EmccWASI() {\\n" + open(sys.argv[1]).read() + "}\\n// " + sys.argv[3])
    """))
    (root / "web" / "src").mkdir()
    (root / "web" / "src" / "index.ts").write_text("export {};\n")
    (root / "web" / "src" / rt.GENERATED_IN_WEB_SRC).write_text("// stale build output\n")
    (root / "web" / "node_modules" / "x").mkdir(parents=True)
    (root / "web" / "package.json").write_text("{}\n")
    (root / "web" / "README.md").write_text("not an input\n")
    (root / "include" / "tvm").mkdir(parents=True)
    (root / "include" / "tvm" / "a.h").write_text("\n")
    dl = root / "3rdparty/tvm-ffi/3rdparty/dlpack/include/dlpack"
    dl.mkdir(parents=True)
    (dl / "dlpack.h").write_text("\n")
    (root / "docs").mkdir()
    (root / "docs" / "x.md").write_text("not an input\n")
    return root


def test_runtime_paths_cover_every_input_tree():
    for tree in rt.INPUT_TREES + rt.INPUT_FILES:
        assert any(tree == p or tree.startswith(p + "/") for p in rt.RUNTIME_PATHS), tree
    assert "3rdparty/tvm-ffi" in rt.RUNTIME_PATHS  # so source_fingerprint includes the ffi origin


def test_incomplete_checkout_names_the_checkout_stage(tmp_path):
    src = _fake_checkout(tmp_path / "tvm")
    (src / "3rdparty/tvm-ffi/3rdparty/dlpack/include/dlpack/dlpack.h").unlink()
    with pytest.raises(WebsdError, match=r"dlpack\.h.*doit tvm_checkout"):
        rt.check_checkout(src)


def test_run_logged_failure_names_the_log_and_keeps_output(tmp_path):
    log = tmp_path / "logs" / "step.log"
    with pytest.raises(WebsdError, match=rf"my step failed \(exit 3\); see {log}"):
        rt.run_logged([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log, what="my step")
    assert "boom" in log.read_text()


def test_load_of_a_missing_runtime_names_the_stage(tmp_path):
    with pytest.raises(WebsdError, match="doit tvmjs_runtime"):
        rt.RuntimeArtifacts.load(tmp_path / "tvmjs")


# --- the stage with stand-in tools: orchestration, atomic output, stamp, logs ----------------------------------

FAKE_EMCC = """\
#!{python}
import os, sys
args = sys.argv[1:]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "emcc-calls.txt"), "a") as f:
    f.write(" ".join(args) + "\\n")
if args == ["--version"]:
    print("emcc (Emscripten gcc/clang-like replacement) 3.1.6 ()")
    sys.exit(0)
if os.environ.get("FAKE_EMCC_FAIL") and "-c" in args:
    print("error: something broke in " + args[-1])
    sys.exit(1)
out = args[args.index("-o") + 1]
if out.endswith(".js"):
    open(out, "w").write("var emcc_glue = 1;\\n")
    open(out[:-3] + ".wasm", "wb").write(b"\\0asm\\1\\0\\0\\0")
else:
    open(out, "wb").write(b"\\0asm\\1\\0\\0\\0")
"""
FAKE_NPM = """\
#!{python}
import os, sys
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "npm-calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["run", "bundle"]:
    glue = open("src/tvmjs_runtime_wasi.js").read()
    open("dist/tvmjs.bundle.js", "w").write("(function(){ /* umd */ " + glue + " })();\\n")
"""
FAKE_NODE = "#!{python}\nprint('v20.0.0')\n"


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in {"emcc": FAKE_EMCC, "npm": FAKE_NPM, "node": FAKE_NODE}.items():
        (bindir / name).write_text(body.replace("{python}", sys.executable))
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bindir


def test_build_with_stand_in_tools_writes_every_output_and_the_stamp(fake_tools, tmp_path):
    src = _fake_checkout(tmp_path / "tvm")
    steps = []
    art = rt.build_tvmjs_runtime(src, tmp_path / "cache" / "tvmjs", progress=steps.append, nice=0)
    # npm install first: a registry problem fails before minutes of emcc
    assert steps == ["npm install", "compile runtime objects", "link runtime + JS glue (ASYNCIFY)",
                     "wrap JS glue as WASI", "npm run bundle"]
    for obj in art.objects:
        assert obj.read_bytes().startswith(WASM_MAGIC)
    assert "EmccWASI" in art.wasi_js.read_text() and art.wasi_js.read_text().endswith("// cjs")
    bundle = art.bundle_js.read_text()
    assert "var emcc_glue" in bundle and "// es" in bundle  # the ES glue went into the bundled copy of web/src
    stamp = json.loads(rt.runtime_stamp(art.dir).read_text())
    assert stamp["emcc_version"] == "3.1.6"
    assert set(stamp["files"]) == {"objects/wasm_runtime.o", "objects/tvmjs_support.o", "objects/webgpu_runtime.o",
                                   "tvmjs_runtime.wasm", "tvmjs_runtime.emcc.js", "tvmjs_runtime.wasi.js",
                                   "tvmjs.bundle.js"}
    assert stamp["native_key"] is None and not stamp["native_reused"]  # not a git checkout: never reused
    # nothing written into the checkout; no temp left beside the output
    assert (src / "web" / "src" / rt.GENERATED_IN_WEB_SRC).read_text() == "// stale build output\n"
    assert not (src / "web" / "dist").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tvmjs", "tvmjs.logs"]
    assert rt.RuntimeArtifacts.load(art.dir) == art
    assert rt.bundle_path(tmp_path / "cache" / "tvmjs") == art.bundle_js


def test_failed_build_names_the_log_and_keeps_the_previous_runtime(fake_tools, tmp_path, monkeypatch):
    src = _fake_checkout(tmp_path / "tvm")
    out = tmp_path / "cache" / "tvmjs"
    rt.build_tvmjs_runtime(src, out, nice=0)
    before = rt.runtime_stamp(out).read_text()
    monkeypatch.setenv("FAKE_EMCC_FAIL", "1")
    with pytest.raises(WebsdError, match=r"emcc -c \w+\.cc failed \(exit 1\); see .*tvmjs\.logs/compile_\w+\.log"):
        rt.build_tvmjs_runtime(src, out, nice=0)
    assert rt.runtime_stamp(out).read_text() == before
    assert "something broke" in (tmp_path / "cache" / "tvmjs.logs" / "compile_wasm_runtime.log").read_text()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tvmjs", "tvmjs.logs"]


def _emcc_calls(bindir: Path) -> list[str]:
    log = bindir / "emcc-calls.txt"
    return log.read_text().splitlines() if log.exists() else []


def test_web_src_edit_rebundles_without_emcc_but_a_cc_edit_rebuilds(fake_tools, tmp_path):
    from tests.fixtures import git

    src = _fake_checkout(tmp_path / "tvm")
    git(src, "init", "-q")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "release")
    out = tmp_path / "cache" / "tvmjs"
    rt.build_tvmjs_runtime(src, out, nice=0)
    first = len(_emcc_calls(fake_tools))
    assert first == len(rt.RUNTIME_SOURCES) + 2  # --version, 3 compiles, the glue link

    (src / "web" / "src" / "index.ts").write_text("export const edited = 1;\n")
    steps = []
    art = rt.build_tvmjs_runtime(src, out, progress=steps.append, nice=0)
    assert len(_emcc_calls(fake_tools)) == first + 1  # only --version
    assert steps[:2] == ["npm install", "reuse runtime objects + JS glue (their sources are unchanged)"]
    assert "npm run bundle" in steps
    assert art.info()["native_reused"] and "var emcc_glue" in art.bundle_js.read_text()
    assert rt.RuntimeArtifacts.load(out).objects[0].read_bytes().startswith(WASM_MAGIC)

    (src / "web" / "emcc" / "wasm_runtime.cc").write_text("// edited\n")
    art = rt.build_tvmjs_runtime(src, out, nice=0)
    assert len(_emcc_calls(fake_tools)) == first + 1 + first
    assert not art.info()["native_reused"]


# --- real build ---------------------------------------------------------------------------------------------------

@real
def test_real_runtime_objects_are_wasm_objects_not_bitcode(tvmjs_runtime):
    for obj in tvmjs_runtime.objects:
        data = obj.read_bytes()
        assert data[:4] == WASM_MAGIC, f"{obj.name} starts with {data[:4]!r}"
        assert b"linking" in data  # the custom section of a relocatable wasm object (a linked module has none)
    assert tvmjs_runtime.objects[0].stat().st_size > 500_000  # wasm_runtime.o: the VM, FFI, RPC


@real
def test_real_runtime_stamp_records_toolchain_and_hashes(tvmjs_runtime, tvm_src):
    from pipeline.fsutil import sha256_file

    info = tvmjs_runtime.info()
    assert info["tvm_commit"] == rt.tvm_commit(tvm_src) and len(info["tvm_commit"]) == 40
    assert info["emcc_version"].count(".") == 2
    for rel, digest in info["files"].items():
        assert sha256_file(tvmjs_runtime.dir / rel) == digest


@real
def test_real_bundle_and_glue_load_in_node(tvmjs_runtime):
    script = ("const t=require(process.argv[1]); const W=require(process.argv[2]);"
              "console.log(JSON.stringify([typeof t.Instance, typeof t.createPolyfillWASI, typeof W]))")
    out = subprocess.run(["node", "-e", script, str(tvmjs_runtime.bundle_js), str(tvmjs_runtime.wasi_js)],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["function", "function", "function"]
    assert "EmccWASI" in tvmjs_runtime.bundle_js.read_text()


@real
def test_real_runtime_inputs_include_what_wasm_runtime_cc_includes(tvm_src):
    """The runtime's staleness (RUNTIME_PATHS, and NATIVE_PATHS for reusing the objects) covers every .cc file
    wasm_runtime.cc #includes, so an edit of one rebuilds the objects."""
    def covered(path: str, trees) -> bool:
        return any(path == t or path.startswith(t + "/") for t in trees)

    text = (tvm_src / "web" / "emcc" / "wasm_runtime.cc").read_text()
    included = [line.split('"')[1] for line in text.splitlines() if line.startswith('#include "')]
    assert included, "wasm_runtime.cc #includes the runtime's .cc files"
    assert [f for f in included if not (tvm_src / f).exists()] == [], "includes are relative to the checkout"
    assert [f for f in included if not covered(f, rt.RUNTIME_PATHS)] == []
    assert [f for f in included if not covered(f, rt.NATIVE_PATHS)] == []
    assert {"web/package.json", "web/rollup.config.mjs"} <= set(rt.RUNTIME_PATHS) and covered("web/src/runtime.ts",
                                                                                              rt.RUNTIME_PATHS)


def test_lockfile_tarballs_are_fetched_from_the_configured_registry(tmp_path):
    """v0.21.0's web/package-lock.json names one tarball on a registry mirror unreachable here: the build's copy
    points every tarball at the configured registry (same path and integrity), leaving the right ones alone."""
    lock = tmp_path / "package-lock.json"
    lock.write_text(json.dumps({"lockfileVersion": 3, "packages": {
        "": {"name": "tvmjs"},
        "node_modules/a": {"version": "1.0.0", "resolved": "https://mirror.invalid/a/-/a-1.0.0.tgz",
                           "integrity": "sha512-x"},
        "node_modules/@t/b": {"resolved": "https://registry.example/@t/b/-/b-2.0.0.tgz"},
        "node_modules/c": {"resolved": "git+ssh://git@host.invalid/c.git"}}}))
    assert rt.retarget_lockfile(lock, "https://registry.example/") == 1
    pkgs = json.loads(lock.read_text())["packages"]
    assert pkgs["node_modules/a"] == {"version": "1.0.0", "resolved": "https://registry.example/a/-/a-1.0.0.tgz",
                                      "integrity": "sha512-x"}
    assert pkgs["node_modules/@t/b"]["resolved"] == "https://registry.example/@t/b/-/b-2.0.0.tgz"
    assert pkgs["node_modules/c"]["resolved"] == "git+ssh://git@host.invalid/c.git"
    assert rt.retarget_lockfile(lock, "") == 0  # no registry configured: left as it is
