"""Where every artifact lives (pipeline/layout.py)."""
from __future__ import annotations

from pipeline.config import load_config
from pipeline.layout import TENSOR_CACHE_JSON, Layout

OTHER_VALUES = {"model.name": "sd15-random", "model.dtype": "float16", "model.image_size": "128",
                "model.width": "96", "model.height": "48",
                "tvm.version": "0.21.0", "tvm.ref": "main", "webgpu.kernels": "subgroup-matrix"}


def test_the_path_keys_are_exactly_the_config_that_moves_the_outputs():
    base = Layout.from_config(load_config(pyproject=None, cli={}))
    assert set(OTHER_VALUES) == set(Layout.PATH_KEYS)
    for key, value in OTHER_VALUES.items():
        assert Layout.from_config(load_config(pyproject=None, cli={key: value})) != base, key
    for key, value in {"model.seed": "7", "webgpu.limits": "desktop", "webgpu.matmul": "k16", "link.profile": "ship",
                       "tvm.build": "source", "web.port": "9000"}.items():
        assert Layout.from_config(load_config(pyproject=None, cli={key: value})) == base, key


def test_tokenizer_and_tensor_cache_paths():
    layout = Layout.from_config(load_config(pyproject=None, cli={}))
    assert layout.tokenizer_dir == layout.model_dir / "tokenizer"
    assert layout.tensor_cache_index("unet") == layout.params_dir("unet") / TENSOR_CACHE_JSON


def test_size_folder_names():
    def size(**cli):
        return Layout.from_config(load_config(pyproject=None, cli=cli)).size

    assert size() == "default"
    assert size(**{"model.image_size": "128"}) == "128"  # the paths of configs from before width/height
    assert size(**{"model.width": "128", "model.height": "128"}) == "128"  # the same image, the same outputs
    assert size(**{"model.width": "64", "model.height": "48"}) == "64x48"
    assert size(**{"model.width": "64"}) == "64xdefault"
    assert size(**{"model.image_size": "96", "model.height": "32"}) == "96x32"
