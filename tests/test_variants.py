"""pipeline.variants: extra compiled variants of a site (webgpu.variants) as tasks, paths and manifest entries."""
import pytest

from pipeline import stages, variants
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.layout import Layout


def _cfg(**cli):
    return load_config(cli={"webgpu.variants": "subgroup-matrix", "webgpu.subgroup_matrix": "lavapipe",
                            "model.dtype": "float16", **cli})


def test_each_variant_adds_compile_and_link_per_submodel():
    cfg = _cfg()
    extra = [t for t in stages.tasks(cfg) if t.variant]
    assert sorted(t.name for t in extra) == sorted(f"{s}_{sub}_subgroup_matrix" for s in ("compile", "link")
                                                   for sub in ("clip", "unet", "vae"))
    task = next(t for t in extra if t.name == "compile_unet_subgroup_matrix")
    assert task.overrides({"model.dtype": "float16"}) == {"model.dtype": "float16",
                                                         "webgpu.kernels": "subgroup-matrix", "webgpu.variants": ""}
    # the variant's builds go elsewhere; its trace and weights are the site's own
    default, variant = Layout.from_config(cfg), Layout.from_config(task.cfg)
    assert variant.compile_dir() != default.compile_dir() and variant.wasm_path("unet") != default.wasm_path("unet")
    assert variant.trace_dir() == default.trace_dir() and variant.params_dir("unet") == default.params_dir("unet")
    assert not [t for t in stages.tasks(load_config()) if t.variant]  # none unless asked for


def test_variant_compiles_webgpu_only_with_its_overrides():
    from pipeline.model import compile as compile_stage

    cfg = variants.at_variant(_cfg(), "subgroup-matrix")
    outs = [p.name for p in compile_stage.outputs(cfg, "unet")]
    assert outs == ["unet.webgpu.tar", "unet.kernels.json", "unet.json"]


def test_manifest_entries_list_requirements_and_files():
    cfg = _cfg()
    [entry] = variants.manifest_entries(cfg)
    assert entry["name"] == "subgroup-matrix"
    assert entry["requires"]["subgroup_matrix_configs"][0]["M"] == 8 and entry["requires"]["subgroup_size"] == 8
    assert entry["submodels"]["unet"] == {"wasm": "variants/subgroup-matrix/unet.wasm",
                                          "kernels": "variants/subgroup-matrix/unet.kernels.json"}
    files = variants.site_files(cfg)
    assert set(files) == {f"variants/subgroup-matrix/{sub}.{ext}" for sub in ("clip", "unet", "vae")
                          for ext in ("wasm", "kernels.json")}
    assert variants.manifest_entries(load_config()) == []


def test_unknown_variant_is_one_line_error():
    with pytest.raises(WebsdError, match="webgpu.variants"):
        load_config(cli={"webgpu.variants": "tensor-cores"})


def test_subgroup_matrix_kernels_need_a_float16_model():
    with pytest.raises(WebsdError, match="model.dtype=float16"):
        stages.tasks(_cfg(**{"model.dtype": "float32"}))
