"""pipeline.sizes and the stage table it extends (no TVM, no torch): each extra size of ``model.sizes`` adds one
trace/compile/link task per image-sized submodel (unet, vae) at that size's own output paths; weights, shards,
verification and clip stay one."""
from __future__ import annotations

import pytest

from pipeline import sizes, stages, submodels
from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.layout import Layout


def _cfg(tmp_path, **cli):
    return load_config(pyproject=None, user_config=tmp_path / "none.toml", env={},
                       cli={"paths.cache": str(tmp_path), "model.name": "tiny", **cli})


def test_the_default_size_comes_first_and_is_not_repeated(tmp_path):
    cfg = _cfg(tmp_path, **{"model.sizes": "64x48,64,96"})
    assert sizes.default(cfg) == (64, 64)
    assert sizes.extra(cfg) == [(64, 48), (96, 96)]
    assert [s.name for s, _ in sizes.all_sizes(cfg)] == ["64x64", "64x48", "96x96"]
    assert sizes.extra(_cfg(tmp_path)) == []


def test_a_size_the_model_does_not_take_is_one_line(tmp_path):
    with pytest.raises(WebsdError, match=r"model.sizes: tiny takes sides that are multiples of 16, not 64x40; fix"):
        sizes.extra(_cfg(tmp_path, **{"model.sizes": "64,64x40"}))


def test_a_size_config_is_the_site_config_at_that_size(tmp_path):
    cfg = _cfg(tmp_path, **{"model.sizes": "64x48", "model.image_size": "64"})
    at = sizes.at_size(cfg, sizes.Size(64, 48))
    assert Layout.from_config(at).size == "64x48" and at.model.size_list == ()
    assert Layout.from_config(at).model_dir == Layout.from_config(cfg).model_dir  # the same weights folder
    # a child process gets the same config from the command line
    assert _cfg(tmp_path, **{"model.sizes": "64x48", "model.image_size": "64",
                             **sizes.overrides(sizes.Size(64, 48))}) == at


def test_the_stage_table_has_one_unet_and_vae_build_per_size_and_one_set_of_shards(tmp_path):
    cfg = _cfg(tmp_path, **{"model.sizes": "64,64x48,96"})
    tasks = stages.tasks(cfg)
    names = [t.name for t in tasks]
    assert len(names) == len(set(names))
    image_sized = [s for s, rec in submodels.REGISTRY.items() if rec.image_sized]
    assert image_sized == ["unet", "vae"]  # clip reads token ids only
    for stage in ("trace", "compile", "link"):
        for sub in image_sized:
            assert [n for n in names if n.startswith(f"{stage}_{sub}")] == \
                [f"{stage}_{sub}", f"{stage}_{sub}_64x48", f"{stage}_{sub}_96x96"]
        assert [n for n in names if n.startswith(f"{stage}_clip")] == [f"{stage}_clip"]
    for stage in ("weights", "shard", "verify", "tokenizer", "site"):
        assert not [t.name for t in tasks if t.stage.name == stage and t.size], stage
    assert [n for n in names if n.startswith("shard_")] == [f"shard_{s}" for s in submodels.names()]
    # every build writes where Layout puts its size, and the per-size outputs never collide
    outputs = [str(p) for t in tasks for p in t.stage.outputs(t.cfg, t.sub)]
    assert len(outputs) == len(set(outputs))
    for t in tasks:
        if t.size:
            assert Layout.from_config(t.cfg).size == t.size.name.replace("96x96", "96")
            assert t.overrides({"model.dtype": "float16"}) == {"model.dtype": "float16",
                                                                **sizes.overrides(t.size)}


def test_without_model_sizes_the_stage_table_is_unchanged(tmp_path):
    names = [t.name for t in stages.tasks(_cfg(tmp_path))]
    assert names == [s.task_name(sub) for s in stages.STAGES for sub in s.subs()]
