"""The TVM API adapters (pipeline/tvm_versions) behind the one seam pipeline.tvm_api.

Every adapter implements the same functions; each path is tested here without a TVM build where it is pure Python
(selection, dtype promotion, the tensor-cache rename) and against the installed TVM where it needs one (the v0.26
adapter with the apache-tvm wheel; the v0.21 adapter with a v0.21 source build, which skips without one).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from pipeline import tvm_api, tvm_versions
from pipeline.errors import WebsdError
from pipeline.tvm_versions import v0_21, v0_26

ADAPTER_API = ("tir", "var_name", "expr_type", "tensor_type", "ret_type", "var_remap_key", "module_kind", "allocated_buffers",
               "cpu_tensor", "take", "dump_tensor_cache", "import_exported_program", "TENSOR_CACHE_JSON")


def test_every_adapter_implements_the_same_functions():
    for adapter in set(tvm_versions.REGISTRY.values()):
        missing = [name for name in ADAPTER_API if not hasattr(adapter, name)]
        assert not missing, f"{adapter.__name__} lacks {missing}"


def test_adapter_selection_by_config_version_and_by_imported_version():
    assert tvm_versions.get("0.21.0") is v0_21
    assert tvm_versions.get("0.26.0") is v0_26
    assert tvm_versions.for_version_string("0.21.0") is v0_21
    assert tvm_versions.for_version_string("0.26.dev0") is v0_26  # a v0.26.0 source build's __version__
    assert tvm_versions.for_version_string("0.27.0.post1") is v0_26
    with pytest.raises(WebsdError, match="pipeline/tvm_versions"):
        tvm_versions.get("0.19.0")
    with pytest.raises(WebsdError, match="no adapter"):
        tvm_versions.for_version_string("0.19.0")


def test_every_registered_version_has_release_facts():
    from pipeline import versions

    for version in tvm_versions.REGISTRY:
        versions.release(version)


@pytest.mark.parametrize("a,b,want", [("int32", "int64", "int64"), ("int64", "float32", "float32"),
                                      ("float16", "float32", "float32"), ("bool", "int32", "int32"),
                                      ("float32", "float32", "float32"), ("float16", "int64", "float16")])
def test_v0_21_binary_ops_promote_like_pytorch(a, b, want):
    import torch

    assert v0_21.promoted_dtype(a, b) == want
    t = {"bool": torch.bool, "int32": torch.int32, "int64": torch.int64, "float16": torch.float16,
         "float32": torch.float32}
    assert str(torch.promote_types(t[a], t[b])).removeprefix("torch.") == want


def test_v0_21_tensor_cache_index_is_renamed(tmp_path, monkeypatch):
    """v0.21's writer names its index ndarray-cache.json; the adapter gives the project's one name."""
    import types

    calls = {}

    def dump_ndarray_cache(arrays, out_dir, **kwargs):
        calls.update(kwargs)
        Path(out_dir, "ndarray-cache.json").write_text(json.dumps({"records": []}))

    tvmjs = types.SimpleNamespace(dump_ndarray_cache=dump_ndarray_cache)
    contrib = types.ModuleType("tvm.contrib")
    contrib.tvmjs = tvmjs
    monkeypatch.setitem(sys.modules, "tvm.contrib", contrib)
    monkeypatch.setitem(sys.modules, "tvm.contrib.tvmjs", tvmjs)
    v0_21.dump_tensor_cache({}, tmp_path, {"x": 1}, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tensor-cache.json"]
    assert calls == {"encode_format": "raw", "meta_data": {"x": 1}, "shard_cap_mb": 32, "show_progress": False}


# --- the adapter of the TVM this venv imports (the apache-tvm wheel: v0.26) ------------------------------------


def _tiny_relax():
    from tvm import relax

    bb = relax.BlockBuilder()
    ty = tvm_api.tensor_type((2, 3), "float32")
    x = relax.Var("x", ty)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.add(x, x))
        bb.emit_func_output(y)
    return bb.get()


def test_the_installed_tvm_goes_through_its_adapter():
    import tvm

    adapter = tvm_api.adapter()
    assert adapter is tvm_versions.for_version_string(tvm.__version__)
    func = _tiny_relax()["main"]
    assert tvm_api.var_name(func.params[0]) == "x"
    assert [int(d) for d in tvm_api.expr_type(func.params[0]).shape] == [2, 3]
    assert str(tvm_api.ret_type(func).dtype) == "float32"
    assert tvm_api.tir().IntImm("int32", 4).value == 4
    assert tvm_api.cpu_tensor(np.ones((2, 2), "float32")).numpy().sum() == 4


def test_the_installed_tvm_imports_a_torch_graph_through_its_adapter():
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x, ids):
            mask = ids.to(torch.int64) + ids  # int64 + int32: promoted like PyTorch
            return torch.where(mask > 0, self.lin(x), 0.0)

    ep = torch.export.export(M(), (torch.ones(4, 3), torch.ones(4, 2, dtype=torch.int32)))
    mod = tvm_api.import_exported_program(ep)
    func = mod["main"]
    assert int(func.attrs["num_input"]) == 2
    assert [tvm_api.var_name(p) for p in func.params][:2] == ["x", "ids"]


# --- the v0.21 adapter against a real v0.21 build -----------------------------------------------------------------

V021_BUILD = os.environ.get("WEBSD_TEST_TVM021_BUILD", "")


@pytest.mark.skipif(not V021_BUILD, reason="no TVM v0.21 build: set WEBSD_TEST_TVM021_BUILD to a cache/tvm/v0.21.0 "
                                          "directory that `doit tvm_build tvm.version=0.21.0` filled")
def test_v0_21_adapter_with_a_v0_21_build():
    """The same checks as above, in a child process that imports the v0.21 build (tvm_build's environment)."""
    from pipeline import tvm_build
    from pipeline.fsutil import read_json

    selection = read_json(Path(V021_BUILD) / "build.json", {})
    assert selection.get("tvm_version") == "0.21.0", f"{V021_BUILD}/build.json is not a v0.21 build"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([selection["python_path"], str(ROOT)]),
               TVM_LIBRARY_PATH=selection["library_path"])
    code = f"""
import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})
import tvm, test_tvm_versions as t
from pipeline import tvm_api
from pipeline.tvm_versions import v0_21
assert tvm.__version__ == "0.21.0", tvm.__version__
assert tvm_api.adapter() is v0_21
t.test_the_installed_tvm_goes_through_its_adapter()
t.test_the_installed_tvm_imports_a_torch_graph_through_its_adapter()
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
