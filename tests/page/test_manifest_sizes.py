"""manifest.json of a site with several sizes (model.sizes), from compile descriptions alone (no TVM): each size with
its dimensions, VAE tile and .wasm files, the default first; the limits the page requests cover every size's build;
and the site stage reads every size's .wasm but one set of weights."""
from __future__ import annotations

import pytest

from pipeline import sizes
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.fsutil import write_json
from pipeline.layout import TENSOR_CACHE_JSON, Layout
from pipeline.page import manifest, site


def _cfg(tmp_path, **cli):
    return load_config(pyproject=None, user_config=tmp_path / "none.toml", env={},
                       cli={"paths.cache": str(tmp_path), "model.name": "tiny", **cli})


def _fake_compiles(cfg) -> dict:
    """A compile description per build of the site, each needing a different binding size; returns them by path."""
    descs = {}
    for i, (sub, path) in enumerate(manifest.compile_descriptions(cfg)):
        descs[path] = {"tvm_version": "0.26.0", "webgpu": {"max_buffer_bytes": 1000 + i,
                                                           "required_limits": {"maxStorageBufferBindingSize": 100 + i}}}
        write_json(path, descs[path])
    return descs


def test_the_manifest_lists_each_size_with_its_wasm_files_default_first(tmp_path):
    cfg = _cfg(tmp_path, **{"model.sizes": "64x48,64", "model.vae_tile": "0"})
    descs = _fake_compiles(cfg)
    assert len(descs) == 3 + 2  # clip, unet, vae at 64; unet and vae at 64x48
    found = manifest.model_manifest(cfg)
    assert found["default_size"] == "64x64" and [s["name"] for s in found["sizes"]] == ["64x64", "64x48"]
    default, wide = found["sizes"]
    assert {k: default[k] for k in ("width", "height", "latent_width", "latent_height")} == \
        {k: found[k] for k in ("width", "height", "latent_width", "latent_height")}
    assert (wide["width"], wide["height"], wide["latent_width"], wide["latent_height"]) == (64, 48, 8, 6)
    assert "vae_tile" in wide
    assert default["wasm"] == {"clip": "clip.wasm", "unet": "unet.wasm", "vae": "vae.wasm"}
    assert wide["wasm"] == {"clip": "clip.wasm", "unet": "sizes/64x48/unet.wasm", "vae": "sizes/64x48/vae.wasm"}
    # one device serves every size: the page requests the most any build needs
    assert found["required_limits"]["maxStorageBufferBindingSize"] == \
        max(d["webgpu"]["required_limits"]["maxStorageBufferBindingSize"] for d in descs.values())
    assert found["max_buffer_bytes"] == max(d["webgpu"]["max_buffer_bytes"] for d in descs.values())


def test_the_site_places_each_sizes_wasm_and_one_set_of_weights(tmp_path):
    cfg = _cfg(tmp_path, **{"model.sizes": "64,64x48"})
    files = site.site_inputs(cfg)
    wide = Layout.from_config(sizes.at_size(cfg, sizes.Size(64, 48)))
    assert files["model/sizes/64x48/unet.wasm"] == wide.wasm_path("unet")
    assert files["model/sizes/64x48/vae.wasm"] == wide.wasm_path("vae")
    assert "model/sizes/64x48/clip.wasm" not in files
    default = Layout.from_config(cfg)
    assert [files[f"model/{s}.wasm"] for s in ("clip", "unet", "vae")] == \
        [default.wasm_path(s) for s in ("clip", "unet", "vae")]
    assert sorted(p for p in files if p.endswith(TENSOR_CACHE_JSON)) == \
        sorted(f"model/params/{s}/{TENSOR_CACHE_JSON}" for s in ("clip", "unet", "vae"))
    assert not any(str(p).startswith(str(wide.variant_dir / "params")) for p in files.values())
    # the site is stale when a size's compile description or traced parameters change
    assert wide.compile_json("unet") in site.inputs(cfg) and wide.trace_params("vae") in site.inputs(cfg)


def test_a_size_whose_parameters_differ_cannot_share_the_weights(tmp_path):
    cfg = _cfg(tmp_path, **{"model.sizes": "64x48"})
    params = [{"name": "conv.weight", "shape": [4, 4]}]
    for size_cfg, shape in ((cfg, [4, 4]), (sizes.at_size(cfg, sizes.Size(64, 48)), [4, 8])):
        for sub in ("unet", "vae"):
            write_json(Layout.from_config(size_cfg).trace_params(sub), {"params": [{**params[0], "shape": shape}]})
    with pytest.raises(WebsdError, match="unet at 64x48 takes other parameters than at the default size"):
        site.check_shared_weights(cfg)
    write_json(Layout.from_config(sizes.at_size(cfg, sizes.Size(64, 48))).trace_params("unet"), {"params": params})
    write_json(Layout.from_config(sizes.at_size(cfg, sizes.Size(64, 48))).trace_params("vae"), {"params": params})
    site.check_shared_weights(cfg)
