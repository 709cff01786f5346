"""The TVM toolchain stages through doit itself, on a fake TVM (a git repo + CMake project made by the test):
what executes after each change is read from doit's own output."""
import json
import os
import shutil

import pytest

from tests.fixtures import git, make_fake_tvm

pytestmark = pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler for the fake TVM's CMake project")

TOOLCHAIN = {"tvm_checkout", "tvm_build"}
TVM = "v0.26.0"  # cache/tvm/<ref>/: each TVM ref has its own checkout, build and stamps


@pytest.fixture
def env(tmp_path):
    repo = make_fake_tvm(tmp_path)
    return dict(os.environ, WEBSD_TVM_MIRROR=str(repo), WEBSD_TVM_BUILD="source",
                # the fake CMake project ignores LLVM; any existing program satisfies the tool check
                WEBSD_TVM_LLVM_CONFIG="true"), repo, tmp_path / "cache"


def test_incremental_toolchain(doit, env):
    env, repo, cache = env
    first = doit("tvm_build", env=env)
    assert first.returncode == 0, first.output
    assert first.executed == TOOLCHAIN
    build = json.loads((cache / "tvm" / TVM / "build.json").read_text())
    assert build["mode"] == "source" and "libtvm_runtime.so" in build["libraries"]
    assert build["library_path"] == str(cache / "tvm" / TVM / "build" / "lib")  # where TVM >= 0.22 puts them
    assert "websd: 2 ran" in first.output  # the summary table

    second = doit("tvm_build", env=env)
    assert second.returncode == 0 and second.executed == set() and second.uptodate == TOOLCHAIN

    # the build directory deleted by hand: rebuilt, not "up to date" with a build.json pointing at nothing
    shutil.rmtree(cache / "tvm" / TVM / "build")
    rebuilt = doit("tvm_build", env=env)
    assert rebuilt.returncode == 0 and rebuilt.executed == {"tvm_build"}, rebuilt.output
    assert (cache / "tvm" / TVM / "build" / "lib" / "libtvm_runtime.so").exists()

    # a TVM developer's edit in the checkout: only the build re-runs
    src = cache / "tvm" / TVM / "src"
    (src / "src" / "runtime.c").write_text("int tvm_runtime_answer(void) { return 43; }\n")
    edited = doit("tvm_build", env=env)
    assert edited.returncode == 0 and edited.executed == {"tvm_build"}, edited.output
    # an edit the build does not read (web/) leaves it up to date
    (src / "web" / "runtime.js").write_text("export const version = 9;\n")
    assert doit("tvm_build", env=env).executed == set()
    git(src, "checkout", "--", ".")

    # a config change read only by tvm_build
    changed = doit("tvm_build", "tvm.build=wheel", env=env)
    assert changed.executed == {"tvm_build"}, changed.output
    assert json.loads((cache / "tvm" / TVM / "build.json").read_text())["mode"] == "wheel"

    # a new ref: checkout and build
    new_ref = doit("tvm_build", "tvm.ref=next", env=env)
    assert new_ref.returncode == 0 and new_ref.executed == TOOLCHAIN, new_ref.output
    assert "return 2" in (cache / "tvm" / "0.26.0-next" / "src" / "src" / "compiler.c").read_text()
    assert "return 1" in (src / "src" / "compiler.c").read_text()  # the tag's tree is kept beside it


def test_switching_tvm_version_back_rebuilds_nothing(doit, env):
    """Each TVM version has its own checkout and build (cache/tvm/v<version>/): a switch builds the other version
    once, and switching back and forth afterwards runs nothing, the C++ build included."""
    env, repo, cache = env
    from tests.fixtures import git

    git(repo, "tag", "v0.27.0", "next")
    first = doit("tvm_build", env=env)
    assert first.returncode == 0 and first.executed == TOOLCHAIN, first.output
    other = doit("tvm_build", "tvm.version=0.27.0", env=env)
    assert other.returncode == 0 and other.executed == TOOLCHAIN, other.output
    for version in ("0.26.0", "0.27.0", "0.26.0"):
        again = doit("tvm_build", f"tvm.version={version}", env=env)
        assert again.returncode == 0 and again.executed == set() and again.uptodate == TOOLCHAIN, again.output
    for version, answer in (("0.26.0", "return 1"), ("0.27.0", "return 2")):
        tvm_dir = cache / "tvm" / f"v{version}"
        assert answer in (tvm_dir / "src" / "src" / "compiler.c").read_text()
        build = json.loads((tvm_dir / "build.json").read_text())
        assert build["tvm_version"] == version and build["library_path"] == str(tvm_dir / "build" / "lib")


@pytest.mark.parametrize("override, message", [
    ({"WEBSD_TVM_MIRROR": "/nonexistent/tvm.git", "WEBSD_TVM_REF": "v0.27.0"},
     "tvm.mirror '/nonexistent/tvm.git' is not a directory"),
    ({"WEBSD_TVM_REF": "no-such-ref"}, "TVM ref 'no-such-ref' not found"),
])
def test_bad_remote_or_ref_fails_in_one_line_and_keeps_outputs(doit, env, override, message):
    env, repo, cache = env
    assert doit("tvm_build", env=env).returncode == 0
    before = {p: p.read_bytes() for p in [cache / "tvm" / TVM / "checkout.json", cache / "tvm" / TVM / "build.json"]}
    lib = next((cache / "tvm" / TVM / "build" / "lib").glob("libtvm_runtime.so"))
    bad = doit("tvm_build", env={**env, **override})
    assert bad.returncode != 0
    error_lines = [l for l in bad.output.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], bad.output
    assert "Traceback" not in bad.output
    assert all(p.read_bytes() == data for p, data in before.items()) and lib.exists()
    assert (cache / "tvm" / TVM / "src" / ".git").exists()


def test_missing_tool_names_the_setup_step(doit, env):
    env, repo, cache = env
    res = doit("tvm_build", env={**env, "WEBSD_TVM_LLVM_CONFIG": "llvm-config-404"})
    assert res.returncode != 0
    assert "error: tvm_build: llvm-config-404 not found: run ./setup.sh" in res.output


def test_clean_keeps_the_toolchain_unless_named(doit, env):
    env, repo, cache = env
    assert doit("tvm_build", env=env).returncode == 0
    doit("clean", "-a", env=env)
    assert (cache / "tvm" / TVM / "build.json").exists() and (cache / "tvm" / TVM / "src").exists()
    doit("clean", "tvm_build", env=env)
    assert not (cache / "tvm" / TVM / "build.json").exists() and (cache / "tvm" / TVM / "src").exists()
