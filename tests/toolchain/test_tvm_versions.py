"""The TVM API adapters (pipeline/toolchain/tvm_versions) behind the one seam pipeline.toolchain.tvm_api.

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
from pipeline.toolchain import tvm_api, tvm_versions
from pipeline.errors import WebsdError
from pipeline.toolchain.tvm_versions import v0_21, v0_26
from pipeline.webgpu import build as webgpu_build
from pipeline.webgpu import inspection

ADAPTER_API = ("tir", "schedule", "schedule_block", "scheduled_attr", "dlight", "estimate_tir_flops", "var_name", "expr_type",
               "tensor_type", "ret_type", "call_type_args", "var_remap_key", "module_kind", "module_source", "imported_modules",
               "allocated_buffers", "cpu_tensor", "take", "dump_tensor_cache", "import_exported_program",
               "TENSOR_CACHE_JSON")


def test_every_adapter_implements_the_same_functions():
    for adapter in set(tvm_versions.REGISTRY.values()):
        missing = [name for name in ADAPTER_API if not hasattr(adapter, name)]
        assert not missing, f"{adapter.__name__} lacks {missing}"


def test_one_selector_for_the_config_version_and_the_imported_version():
    assert tvm_versions.select("0.21.0") is v0_21
    assert tvm_versions.select("0.26.0") is v0_26
    assert tvm_versions.select("0.26.dev0") is v0_26  # a v0.26.0 source build's __version__
    assert tvm_versions.select("0.27.0.post1") is v0_26
    with pytest.raises(WebsdError, match="no TVM API adapter for TVM 0.19.0 .*pipeline/toolchain/tvm_versions/"):
        tvm_versions.select("0.19.0")


def test_every_registered_version_has_release_facts():
    from pipeline.toolchain import versions

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
    assert adapter is tvm_versions.select(tvm.__version__)
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


def _saved_like_a_trace():
    """A module with what the pipeline's traces hold: a non-persistent buffer (CLIP's position_ids), a reverse
    subtraction from a Python int (the VAE's 255 - x), a user input whose shape differs from every weight's."""
    import torch

    class Saved(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 5)
            self.register_buffer("offsets", torch.arange(5).float(), persistent=False)

        def forward(self, x):
            return 255 - self.lin(x) + self.offsets

    return Saved()


def test_the_installed_tvm_imports_a_saved_trace_with_weight_stand_ins(tmp_path):
    """A program as ``trace`` writes it (weights replaced by zero-stride stand-ins, then ``torch.export.save``)
    and ``compile`` loads it back: the loaded placeholders lack the ``tensor_meta`` v0.21 read input shapes from,
    and DLPack refuses the stand-ins. The result must have torch's shapes (v0.21 checks each op; see below)."""
    import torch

    from pipeline.model.trace import _without_weights

    ep = torch.export.export(_saved_like_a_trace(), (torch.ones(2, 7, 3),))
    _without_weights(ep)
    torch.export.save(ep, tmp_path / "saved.pt2")
    mod = tvm_api.import_exported_program(torch.export.load(tmp_path / "saved.pt2"))
    func = mod["main"]
    assert int(func.attrs["num_input"]) == 1
    assert [int(d) for d in tvm_api.expr_type(func.params[0]).shape] == [2, 7, 3]
    out = tvm_api.ret_type(func)
    assert [int(d) for d in out.shape] == [2, 7, 5] and str(out.dtype) == "float32"


def test_the_installed_tvm_schedules_builds_and_reads_back_a_webgpu_kernel():
    """The schedule-side seam (dlight, a hand schedule, FLOP estimates) and the reading of a build's WGSL."""
    import tvm
    from tvm import te

    a = te.placeholder((64, 32), "float32", name="a")
    b = te.compute((64,), lambda i: a[i, 0] * 2.0, name="b")
    prim = te.create_prim_func([a, b]).with_attr("global_symbol", "double_first")
    sch = tvm_api.schedule(prim)
    i, = sch.get_loops(tvm_api.schedule_block(sch, "b"))
    outer, inner = sch.split(i, [None, 32])
    sch.bind(outer, "blockIdx.x")
    sch.bind(inner, "threadIdx.x")
    scheduled = tvm_api.mark_scheduled(sch.mod["main"])
    assert bool(scheduled.attrs[tvm_api.adapter().scheduled_attr])
    assert inspection.kernel_costs(tvm.IRModule({"double_first": scheduled}))["double_first"] == \
        {"flops": 64, "bytes": (64 * 32 + 64) * 4}
    assert inspection.launch_grids(tvm.IRModule({"double_first": scheduled})) == {"double_first": (2, 1, 1)}
    assert hasattr(tvm_api.dlight(), "gpu")

    target = webgpu_build.target()
    mod = tvm.IRModule({"main": _tiny_relax()["main"]})
    from tvm import relax

    with target:
        mod = relax.get_pipeline("zero")(mod)
        mod = tvm_api.dlight().ApplyDefaultSchedule(tvm_api.dlight().gpu.Fallback())(mod)
    executable = relax.build(mod, target=tvm.target.Target(target, host="llvm")) if hasattr(relax, "build") \
        else tvm.compile(mod, target=tvm.target.Target(target, host="llvm"))
    wgsl = inspection.webgpu_source(executable)
    assert "@compute" in wgsl and "fn " in wgsl


# --- the v0.21 adapter against a real v0.21 build -----------------------------------------------------------------

V021_BUILD = os.environ.get("WEBSD_TEST_TVM021_BUILD", "")


def check_v0_21_names_a_wrong_converter():
    """v0.21's importer checks each op against torch's recorded shape: a converter that goes wrong (here one that
    drops a broadcast) is named at its own node, not at some later op it breaks."""
    import torch

    class Broadcast(torch.nn.Module):
        def forward(self, x, y):
            return (x + y) * 2

    class WrongAdd(v0_21.importer_class()):
        def _converters(self):
            table = super()._converters()
            table["add.Tensor"] = lambda node: self.env[node.args[0]]
            return table

    ep = torch.export.export(Broadcast(), (torch.ones(2, 1), torch.ones(1, 3)))
    with pytest.raises(WebsdError, match=r"add.Tensor \(node add\) to \[2, 1\] float32, where torch has \[2, 3\]"):
        WrongAdd().from_exported_program(v0_21._ProgramView(ep), keep_params_as_input=True,
                                         unwrap_unit_return_tuple=True, no_bind_return_tuple=False)
    assert v0_21.import_exported_program(ep) is not None  # the real converters pass the same check


@pytest.mark.skipif(not V021_BUILD, reason="no TVM v0.21 build: set WEBSD_TEST_TVM021_BUILD to a cache/tvm/v0.21.0 "
                                          "directory that `doit tvm_build tvm.version=0.21.0` filled")
def test_v0_21_adapter_with_a_v0_21_build():
    """The same checks as above, in a child process that imports the v0.21 build (tvm_build's environment)."""
    from pipeline.toolchain import tvm_build
    from pipeline.fsutil import read_json

    selection = read_json(Path(V021_BUILD) / "build.json", {})
    assert selection.get("tvm_version") == "0.21.0", f"{V021_BUILD}/build.json is not a v0.21 build"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([selection["python_path"], str(ROOT)]),
               TVM_LIBRARY_PATH=selection["library_path"])
    code = f"""
import sys; sys.path.insert(0, {str(ROOT / 'tests' / 'toolchain')!r})
import pathlib, tempfile
import tvm, test_tvm_versions as t
from pipeline.toolchain import tvm_api
from pipeline.toolchain.tvm_versions import v0_21
assert tvm.__version__ == "0.21.0", tvm.__version__
assert tvm_api.adapter() is v0_21
t.test_the_installed_tvm_goes_through_its_adapter()
t.test_the_installed_tvm_imports_a_torch_graph_through_its_adapter()
t.test_the_installed_tvm_imports_a_saved_trace_with_weight_stand_ins(pathlib.Path(tempfile.mkdtemp()))
t.test_the_installed_tvm_schedules_builds_and_reads_back_a_webgpu_kernel()
t.check_v0_21_names_a_wrong_converter()
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
