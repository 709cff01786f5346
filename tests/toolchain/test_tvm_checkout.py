import json
import os

import pytest

from pipeline.toolchain import tvm_checkout
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.layout import Layout
from tests.fixtures import add_submodule_gitlink, git, make_fake_tvm


@pytest.fixture
def fake_tvm(tmp_path):
    return make_fake_tvm(tmp_path)


def cfg_for(remote, **cli):
    return load_config(env={**os.environ, "WEBSD_TVM_MIRROR": str(remote)}, cli=cli)


def test_checkout_is_at_the_tag_and_records_the_commit(fake_tvm):
    cfg = cfg_for(fake_tvm)
    result = tvm_checkout.run(cfg, log=lambda m: None)
    assert result.executed and result.commit == git(fake_tvm, "rev-parse", "v0.26.0")
    assert (result.src / "src" / "runtime.c").exists()
    assert tvm_checkout.is_unmodified_release(result.src, "0.26.0")
    again = tvm_checkout.run(cfg, log=lambda m: None)
    assert not again.executed and again.commit == result.commit


def test_tags_win_over_branches_and_commits_resolve(fake_tvm):
    git(fake_tvm, "branch", "v0.26.0-branch")
    tag_commit, spec = tvm_checkout.resolve_ref(str(fake_tvm), "v0.26.0")
    assert spec == "refs/tags/v0.26.0" and tag_commit == git(fake_tvm, "rev-parse", "v0.26.0")
    nxt, spec = tvm_checkout.resolve_ref(str(fake_tvm), "next")
    assert spec == "refs/heads/next" and nxt != tag_commit
    full = git(fake_tvm, "rev-parse", "next")
    assert tvm_checkout.resolve_ref(str(fake_tvm), full) == (full, full)


def test_checkout_of_a_bare_commit_id(fake_tvm):
    commit = git(fake_tvm, "rev-parse", "next")
    result = tvm_checkout.run(cfg_for(fake_tvm, **{"tvm.ref": commit}), log=lambda m: None)
    assert result.commit == commit
    assert "return 2" in (result.src / "src" / "compiler.c").read_text()


def test_fingerprint_sees_local_edits_only_under_the_given_paths(fake_tvm):
    src = tvm_checkout.run(cfg_for(fake_tvm), log=lambda m: None).src
    build0 = tvm_checkout.source_fingerprint(src, tvm_checkout.BUILD_PATHS)
    web0 = tvm_checkout.source_fingerprint(src, ("web",))
    (src / "web" / "runtime.js").write_text("export const version = 2;\n")
    assert tvm_checkout.source_fingerprint(src, tvm_checkout.BUILD_PATHS) == build0
    web1 = tvm_checkout.source_fingerprint(src, ("web",))
    assert web1 != web0
    (src / "web" / "new.js").write_text("untracked\n")  # untracked files count too
    assert tvm_checkout.source_fingerprint(src, ("web",)) != web1
    (src / "src" / "runtime.c").write_text("int tvm_runtime_answer(void) { return 43; }\n")
    assert tvm_checkout.source_fingerprint(src, tvm_checkout.BUILD_PATHS) != build0
    assert not tvm_checkout.is_unmodified_release(src, "0.26.0")


def test_switching_ref_keeps_each_tree_and_a_moved_branch_refuses_to_drop_local_edits(fake_tvm):
    src = tvm_checkout.run(cfg_for(fake_tvm), log=lambda m: None).src
    (src / "src" / "runtime.c").write_text("// my work\n")
    # another ref is another tree (cache/tvm/<ref>/src): the edited one is left alone
    nxt = tvm_checkout.run(cfg_for(fake_tvm, **{"tvm.ref": "next"}), log=lambda m: None).src
    assert nxt != src and "return 2" in (nxt / "src" / "compiler.c").read_text()
    assert (src / "src" / "runtime.c").read_text() == "// my work\n"
    # the same branch moved upstream while its tree has local edits: refuse to throw them away
    (nxt / "src" / "runtime.c").write_text("// my work on next\n")
    git(fake_tvm, "checkout", "-q", "next")
    (fake_tvm / "src" / "compiler.c").write_text("int tvm_compile(void) { return 3; }\n")
    git(fake_tvm, "commit", "-q", "-am", "next moves")
    with pytest.raises(WebsdError, match="has local edits; commit or stash them"):
        tvm_checkout.run(cfg_for(fake_tvm, **{"tvm.ref": "next"}), log=lambda m: None)
    assert (nxt / "src" / "runtime.c").read_text() == "// my work on next\n"


@pytest.mark.parametrize("remote, ref, message", [
    ("/nonexistent/tvm.git", "v0.26.0", "tvm.mirror '/nonexistent/tvm.git' is not a directory"),
    (None, "v9.9.9", "TVM ref 'v9.9.9' not found"),
])
def test_bad_remote_or_ref_is_a_one_line_error(fake_tvm, remote, ref, message):
    with pytest.raises(WebsdError) as err:
        tvm_checkout.run(cfg_for(remote or fake_tvm, **{"tvm.ref": ref}), log=lambda m: None)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_tvm_ffi_submodule_falls_back_to_the_sdist_when_its_remote_is_unreachable(tmp_path, monkeypatch):
    """A TVM with a tvm-ffi gitlink whose URL is unreachable gets the apache-tvm-ffi sdist (pip is faked)."""
    repo = make_fake_tvm(tmp_path)
    ffi = tmp_path / "ffi-sub"
    ffi.mkdir()
    git(ffi, "init", "-q")
    (ffi / "x").write_text("x")
    git(ffi, "add", "x")
    git(ffi, "commit", "-qm", "x")
    add_submodule_gitlink(repo, "3rdparty/tvm-ffi", "/nonexistent/tvm-ffi", git(ffi, "rev-parse", "HEAD"))
    git(repo, "tag", "-f", "v0.26.0")
    filled = []

    def fake_sdist(dest, version):
        (dest / "3rdparty" / "dlpack" / "include").mkdir(parents=True)
        filled.append(version)

    monkeypatch.setattr(tvm_checkout, "_fill_from_sdist", fake_sdist)
    result = tvm_checkout.run(cfg_for(repo), log=lambda m: None)
    assert filled == ["0.1.14.post0"] and result.ffi_source == "sdist 0.1.14.post0"
    # the filled submodule is not a local edit: the release still counts as unmodified
    assert tvm_checkout.is_unmodified_release(result.src, "0.26.0")


def test_tvm_ffi_submodule_from_the_ffi_mirror(tmp_path, monkeypatch):
    """With tvm.ffi_mirror set, the submodule is the real one at the pinned commit; dlpack (unreachable) comes
    from the sdist."""
    repo = make_fake_tvm(tmp_path)
    ffi = tmp_path / "ffi-mirror"
    ffi.mkdir()
    git(ffi, "init", "-q")
    (ffi / "ffi.h").write_text("// real tvm-ffi\n")
    git(ffi, "add", "-A")
    add_submodule_gitlink(ffi, "3rdparty/dlpack", "/nonexistent/dlpack", "1" * 40)
    add_submodule_gitlink(repo, "3rdparty/tvm-ffi", "/nonexistent/tvm-ffi", git(ffi, "rev-parse", "HEAD"))
    git(repo, "tag", "-f", "v0.26.0")

    def fake_sdist(dest, version):
        (dest / "3rdparty" / "dlpack" / "include").mkdir(parents=True)
        (dest / "3rdparty" / "dlpack" / "include" / "dlpack.h").write_text("// dlpack\n")

    monkeypatch.setattr(tvm_checkout, "_fill_from_sdist", fake_sdist)
    cfg = load_config(env={**os.environ, "WEBSD_TVM_MIRROR": str(repo), "WEBSD_TVM_FFI_MIRROR": str(ffi)})
    result = tvm_checkout.run(cfg, log=lambda m: None)
    assert result.ffi_source == "git, dlpack from sdist 0.1.14.post0"
    assert (result.src / "3rdparty" / "tvm-ffi" / "ffi.h").read_text() == "// real tvm-ffi\n"
    assert (result.src / "3rdparty" / "tvm-ffi" / "3rdparty" / "dlpack" / "include" / "dlpack.h").exists()
    assert tvm_checkout.is_unmodified_release(result.src, "0.26.0")


def _mirror(path, files: dict) -> str:
    """A one-commit git repository standing in for a submodule's upstream; returns its commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "upstream")
    return git(path, "rev-parse", "HEAD")


def _v021_like(tmp_path, monkeypatch):
    """A fake TVM tagged v0.21.0 with v0.21's submodule naming (.gitmodules name "dmlc-core" for path
    3rdparty/dmlc-core), an unreachable upstream, and a local mirror of it."""
    from pipeline.toolchain import versions

    repo = make_fake_tvm(tmp_path, version="0.21.0")
    mirror = tmp_path / "mirrors" / "dmlc-core.git"
    commit = _mirror(mirror, {"include/dmlc/base.h": "// dmlc\n"})
    (repo / ".gitmodules").write_text('[submodule "dmlc-core"]\n\tpath = 3rdparty/dmlc-core\n'
                                      '\turl = /nonexistent/dmlc/dmlc-core.git\n')
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{commit},3rdparty/dmlc-core")
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "-qm", "submodule")
    git(repo, "tag", "-f", "v0.21.0")
    monkeypatch.setitem(versions.RELEASES, "0.21.0", versions.TvmRelease(
        tvm_ffi=None, has_wheel=False, submodules=("3rdparty/dmlc-core",)))
    return repo, mirror, commit


def test_submodules_of_a_release_come_from_tvm_submodule_mirrors(tmp_path, monkeypatch):
    repo, mirror, commit = _v021_like(tmp_path, monkeypatch)
    env = {**os.environ, "WEBSD_TVM_MIRROR": str(repo), "WEBSD_TVM_SUBMODULE_MIRRORS": f"dmlc-core={mirror}"}
    result = tvm_checkout.run(load_config(env=env, cli={"tvm.version": "0.21.0"}), log=lambda m: None)
    assert result.src == Layout.from_config(load_config(env=env, cli={"tvm.version": "0.21.0"})).tvm_src
    assert result.src.parent.name == "v0.21.0"
    assert (result.src / "3rdparty" / "dmlc-core" / "include" / "dmlc" / "base.h").read_text() == "// dmlc\n"
    stamp = Layout.from_config(load_config(env=env, cli={"tvm.version": "0.21.0"})).tvm_checkout_stamp
    import json

    assert json.loads(stamp.read_text())["submodules"] == {"3rdparty/dmlc-core": commit}
    assert tvm_checkout.is_unmodified_release(result.src, "0.21.0")  # a filled submodule is no local edit


def test_an_unreachable_submodule_without_a_mirror_names_the_setting(tmp_path, monkeypatch):
    repo, _mirror_path, _commit = _v021_like(tmp_path, monkeypatch)
    cfg = load_config(env={**os.environ, "WEBSD_TVM_MIRROR": str(repo)}, cli={"tvm.version": "0.21.0"})
    with pytest.raises(WebsdError, match=r"cannot fetch TVM submodule 3rdparty/dmlc-core .*"
                                         r"WEBSD_TVM_SUBMODULE_MIRRORS=dmlc-core=/path/to/dmlc-core.git"):
        tvm_checkout.run(cfg, log=lambda m: None)


def test_backports_are_applied_once_and_survive_a_forced_checkout(tmp_path, monkeypatch):
    """The patch step: an upstream commit (not in the tag) applied from the TVM remote, fingerprinted as local
    edits, re-applied when something reset the tree, and not taken for a user's edits."""
    from pipeline.toolchain import versions

    repo = make_fake_tvm(tmp_path)
    git(repo, "checkout", "-q", "-b", "fix", "v0.26.0")
    (repo / "src" / "runtime.c").write_text("int tvm_runtime_answer(void) { return 420; }\n")
    git(repo, "commit", "-q", "-am", "upstream fix")
    fix = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-D", "fix")  # reachable only by id, like a commit on upstream's main after the tag
    git(repo, "tag", "keep-fix", fix)
    monkeypatch.setitem(versions.RELEASES, "0.26.0", versions.TvmRelease(
        tvm_ffi="0.1.14.post0", has_wheel=True, backports=(fix,)))
    cfg = cfg_for(repo)
    src = tvm_checkout.run(cfg, log=lambda m: None).src
    assert "return 420" in (src / "src" / "runtime.c").read_text()
    assert not tvm_checkout.is_unmodified_release(src, "0.26.0")  # patched: the wheel no longer substitutes
    assert not tvm_checkout._has_local_edits(src)  # our own edits
    fp = tvm_checkout.source_fingerprint(src, tvm_checkout.BUILD_PATHS)
    assert not tvm_checkout.run(cfg, log=lambda m: None).executed  # applied once
    assert "return 420" in (src / "src" / "runtime.c").read_text()
    git(src, "checkout", "-q", "--force", "HEAD")  # something reset the tree
    tvm_checkout.apply_backports(src, str(repo), [fix])
    assert "return 420" in (src / "src" / "runtime.c").read_text()
    assert tvm_checkout.source_fingerprint(src, tvm_checkout.BUILD_PATHS) == fp
    (src / "src" / "compiler.c").write_text("// mine\n")
    assert tvm_checkout._has_local_edits(src)
    # dropped from versions.py: taken out again, the user's edit stays
    tvm_checkout.apply_backports(src, str(repo), [])
    assert "return 42;" in (src / "src" / "runtime.c").read_text()
    assert (src / "src" / "compiler.c").read_text() == "// mine\n"


def test_a_backport_that_does_not_apply_is_one_line(tmp_path, monkeypatch):
    from pipeline.toolchain import versions

    repo = make_fake_tvm(tmp_path)
    nxt = git(repo, "rev-parse", "next")  # changes compiler.c from "return 1"...
    git(repo, "checkout", "-q", "next")
    (repo / "src" / "compiler.c").write_text("int tvm_compile(void) { return 7; }\n")
    git(repo, "commit", "-q", "-am", "on top")
    on_top = git(repo, "rev-parse", "HEAD")  # ...this one from "return 2": not applicable to the tag
    git(repo, "checkout", "-q", "main")
    monkeypatch.setitem(versions.RELEASES, "0.26.0", versions.TvmRelease(
        tvm_ffi="0.1.14.post0", has_wheel=True, backports=(on_top,)))
    with pytest.raises(WebsdError, match=rf"backport {on_top[:12]} does not apply .* fix backports/patches "
                                         r"in pipeline/toolchain/versions.py"):
        tvm_checkout.run(cfg_for(repo), log=lambda m: None)
    assert nxt


def test_our_own_patches_apply_like_backports_and_name_their_file(tmp_path, monkeypatch):
    """A patch file of this project (pipeline/toolchain/tvm_patches/) goes through the same patch step: applied once, kept
    out of the user's edits, re-applied after a reset, taken out when dropped; a missing or stale one is one line."""
    from pipeline.toolchain import versions

    repo = make_fake_tvm(tmp_path)
    patches = tmp_path / "tvm_patches"
    patches.mkdir()
    (patches / "fix.patch").write_text(
        "Why: the answer was wrong.\n\n"
        "diff --git a/src/runtime.c b/src/runtime.c\n--- a/src/runtime.c\n+++ b/src/runtime.c\n@@ -1 +1 @@\n"
        "-int tvm_runtime_answer(void) { return 42; }\n+int tvm_runtime_answer(void) { return 43; }\n")
    monkeypatch.setattr(tvm_checkout, "PATCH_DIR", patches)
    monkeypatch.setitem(versions.RELEASES, "0.26.0", versions.TvmRelease(
        tvm_ffi="0.1.14.post0", has_wheel=True, patches=("fix.patch",)))
    cfg = cfg_for(repo)
    src = tvm_checkout.run(cfg, log=lambda m: None).src
    runtime = src / "src" / "runtime.c"
    assert "return 43" in runtime.read_text()
    assert json.loads(Layout.from_config(cfg).tvm_checkout_stamp.read_text())["backports"] == \
        ["tvm_patches/fix.patch"]
    assert not tvm_checkout._has_local_edits(src)
    assert not tvm_checkout.run(cfg, log=lambda m: None).executed
    git(src, "checkout", "-q", "--force", "HEAD")
    assert tvm_checkout.run(cfg, log=lambda m: None) and "return 43" in runtime.read_text()
    tvm_checkout.apply_backports(src, str(repo), [], [])
    assert "return 42;" in runtime.read_text()
    with pytest.raises(WebsdError, match="names the TVM patch gone.patch, which is not in pipeline/toolchain/tvm_patches/"):
        tvm_checkout.apply_backports(src, str(repo), [], ["gone.patch"])
    runtime.write_text("int tvm_runtime_answer(void) { return 7; }\n")
    with pytest.raises(WebsdError, match=r"patch pipeline/toolchain/tvm_patches/fix.patch does not apply .* fix "
                                         r"backports/patches in pipeline/toolchain/versions.py"):
        tvm_checkout.apply_backports(src, str(repo), [], ["fix.patch"])
