from pathlib import Path

import pytest

from pipeline.config import Config, known_keys, load_config, main
from pipeline.errors import WebsdError


def test_defaults_without_any_file(tmp_path):
    cfg = load_config(pyproject=None, user_config=tmp_path / "none.toml", env={})
    assert cfg == Config()
    assert cfg.tvm.resolved_ref == "v0.26.0"
    assert cfg.tvm.remote == cfg.tvm.git


def test_layers_later_wins(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.websd.model]\ndtype = "float16"\nseed = 3\n[tool.websd.tvm]\nref = "v1"\n')
    user = tmp_path / "user.toml"
    user.write_text('[tvm]\nmirror = "/srv/tvm.git"\nref = "v2"\n')
    cfg = load_config(pyproject, user, env={"WEBSD_MODEL_SEED": "7"}, cli={"tvm.ref": "v3"})
    assert (cfg.model.dtype, cfg.model.seed, cfg.tvm.mirror, cfg.tvm.ref) == ("float16", 7, "/srv/tvm.git", "v3")
    assert cfg.tvm.remote == "/srv/tvm.git"


@pytest.mark.parametrize("layer, message", [
    ({"cli": {"model.dtyp": "float16"}}, "unknown config key 'model.dtyp'"),
    ({"cli": {"model.dtype": "bfloat8"}}, "model.dtype (from the doit command line) must be one of float32, float16"),
    ({"env": {"WEBSD_MODEL_SEED": "abc"}}, "model.seed (from the environment"),
    ({"env": {"WEBSD_TVM_MIRRORS": "x"}}, "unknown config key 'tvm.mirrors'"),
    ({"cli": {"tvm.build": "cuda"}}, "tvm.build (from the doit command line) must be one of auto, source, wheel"),
])
def test_bad_values_are_one_line_errors_naming_the_key(tmp_path, layer, message):
    with pytest.raises(WebsdError) as err:
        load_config(pyproject=None, user_config=tmp_path / "none.toml", **{"env": {}, **layer})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_toml_names_the_file(tmp_path):
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.websd.model\n")
    with pytest.raises(WebsdError, match="pyproject.toml is not valid TOML"):
        load_config(bad, tmp_path / "none.toml", env={})
    bad.write_text('[tool.websd]\nmodel = "tiny"\n')
    with pytest.raises(WebsdError, match=r"\[model\] must be a table"):
        load_config(bad, tmp_path / "none.toml", env={})


def test_subset_is_what_a_stage_reads():
    cfg = load_config(pyproject=None, env={}, cli={"model.dtype": "float16"})
    assert cfg.subset("model.dtype", "tvm.ref") == {"model.dtype": "float16", "tvm.ref": ""}


def test_project_pyproject_is_valid_and_cli_prints_version(capsys):
    assert main(["get", "tvm.version"]) == 0
    assert capsys.readouterr().out.strip() == load_config().tvm.version
    assert main(["bogus"]) == 2
    assert "tvm.mirror" in known_keys()


def test_submodule_mirrors_by_repository_name(tmp_path):
    from pipeline.config import load_config

    # an env without XDG_CONFIG_HOME would read the developer's own ~/.config/websd (its tvm.ffi_mirror wins below)
    xdg = {"XDG_CONFIG_HOME": str(tmp_path)}
    cfg = load_config(pyproject=None, env={**xdg, "WEBSD_TVM_SUBMODULE_MIRRORS": "dmlc-core=/m/dmlc-core.git, rang=/m/rang"})
    assert cfg.tvm.submodule_mirror("dmlc-core") == "/m/dmlc-core.git"
    assert cfg.tvm.submodule_mirror("rang") == "/m/rang"
    assert cfg.tvm.submodule_mirror("dlpack") == ""
    # tvm.ffi_mirror is the tvm-ffi entry; the list may name it too
    assert load_config(pyproject=None, env={**xdg, "WEBSD_TVM_SUBMODULE_MIRRORS": "tvm-ffi=/m/ffi"}).tvm.submodule_mirror(
        "tvm-ffi") == "/m/ffi"
    assert load_config(pyproject=None, env={**xdg, "WEBSD_TVM_FFI_MIRROR": "/m/f"}).tvm.submodule_mirror("tvm-ffi") == "/m/f"


def test_a_bad_submodule_mirror_entry_is_one_line():
    from pipeline.config import load_config
    from pipeline.errors import WebsdError

    with pytest.raises(WebsdError, match="tvm.submodule_mirrors: expected name=path pairs"):
        load_config(pyproject=None, env={"WEBSD_TVM_SUBMODULE_MIRRORS": "dmlc-core"})


def test_model_sizes_parse_from_the_command_line_and_a_toml_list(tmp_path):
    cfg = load_config(pyproject=None, user_config=tmp_path / "none.toml", env={}, cli={"model.sizes": "512, 512x768"})
    assert cfg.model.size_list == ((512, 512), (512, 768))
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.websd.model]\nsizes = ["512", 768, "512x768"]\n')
    cfg = load_config(pyproject, tmp_path / "none.toml", env={})
    assert (cfg.model.sizes, cfg.model.size_list) == ("512,768,512x768", ((512, 512), (768, 768), (512, 768)))
    assert load_config(pyproject=None, user_config=tmp_path / "none.toml", env={}).model.size_list == ()


@pytest.mark.parametrize("sizes, message", [
    ("512,abc", "model.sizes: 'abc' is not a size; write <n> or <width>x<height>"),
    ("0", "model.sizes: '0' is not a size"),
    ("512x", "model.sizes: '512x' is not a size"),
    ("512,512x512", "model.sizes lists 512x512 twice"),
])
def test_a_bad_model_sizes_is_one_line(tmp_path, sizes, message):
    with pytest.raises(WebsdError) as e:
        load_config(pyproject=None, user_config=tmp_path / "none.toml", env={}, cli={"model.sizes": sizes})
    assert message in str(e.value) and "\n" not in str(e.value)
