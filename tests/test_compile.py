"""Stage compile_<sub>: Relax import, WebGPU (wasm objects) + llvm builds, buffer sizes."""
from __future__ import annotations

import json

import numpy as np
import tarfile

import pytest

from pipeline import compile as compile_stage
from pipeline import trace
from tests.model_build import tiny_f16_clip, tiny_f32  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # builds the tiny model (once per session)


def test_buffer_sizes_of_a_lowered_module():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1024, 1024), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.softmax(x))
            z = bb.emit_output(relax.op.add(y, y))
        bb.emit_func_output(z)
    target = compile_stage.tvm_target("webgpu")
    with target:
        lowered = relax.get_default_pipeline(target)(bb.get())
    sizes = compile_stage.buffer_sizes(lowered)
    assert sizes["max_buffer_bytes"] == 4 << 20
    assert isinstance(tvm.compile(lowered, target, relax_pipeline=None), tvm.runtime.Executable)


def test_a_kernel_given_one_buffer_twice_is_found():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.concat([x, x], axis=0))
        bb.emit_func_output(y)
    target = compile_stage.tvm_target("webgpu")
    with target:
        lowered = relax.get_default_pipeline(target)(bb.get())
    assert compile_stage.aliased_kernel_calls(lowered) == ["concatenate(x twice)"]


def test_embedding_rows_are_cast_after_the_lookup():
    import numpy as np
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    table = relax.Var("table", relax.TensorType((1000, 8), "float16"))
    ids = relax.Var("ids", relax.TensorType((2, 3), "int32"))
    with bb.function("main", [ids, table]):
        with bb.dataflow():
            wide = bb.emit(relax.op.astype(table, "float32"))
            rows = bb.emit_output(relax.op.take(wide, ids, axis=0))
        bb.emit_func_output(rows)
    mod = compile_stage.gather_before_cast(bb.get())
    assert "(1000, 8), dtype=\"float32\"" not in mod.script()
    vm = relax.VirtualMachine(tvm.compile(mod, compile_stage.tvm_target("llvm")), tvm.cpu())
    weights = np.random.default_rng(0).standard_normal((1000, 8)).astype("float16")
    index = np.array([[0, 5, 999], [3, 3, 1]], dtype="int32")
    out = vm["main"](tvm.runtime.tensor(index), tvm.runtime.tensor(weights)).numpy()
    assert out.dtype == np.float32 and np.array_equal(out, weights[index].astype("float32"))


def test_compile_outputs_follow_the_page_contract(tiny_f32):  # noqa: F811
    for sub, inputs, output in [
        ("clip", [("input_ids", [2, 77], "int32")], {"shape": [2, 77, 32], "dtype": "float32"}),
        ("unet", [("latents", [1, 4, 8, 8], "float32"), ("timestep", [1], "float32"),
                  ("text_emb", [2, 77, 32], "float32"), ("guidance_scale", [1], "float32")],
         {"shape": [1, 4, 8, 8], "dtype": "float32"}),
        ("vae", [("latents", [1, 4, 8, 8], "float32")], {"shape": [1, 64, 64, 3], "dtype": "float32"}),
    ]:
        paths = compile_stage.paths(tiny_f32, sub)
        desc = json.loads(paths["json"].read_text())
        assert desc["function"] == sub
        assert [(i["name"], i["shape"], i["dtype"]) for i in desc["inputs"]] == inputs
        assert desc["output"] == output
        traced = [p["name"] for p in json.loads(trace.paths(tiny_f32, sub)[1].read_text())["params"]]
        for target in ("webgpu", "llvm"):
            assert [p["name"] for p in desc[target]["params"]] == traced
            assert {p["dtype"] for p in desc[target]["params"]} == {"float32"}
            assert 0 < desc[target]["max_buffer_bytes"] <= 128 << 20 and desc[target]["kernels"] > 0
        with tarfile.open(paths["webgpu"]) as tar:
            members = tar.getmembers()
            assert members and all(m.name.endswith(".o") for m in members)
            assert all(tar.extractfile(m).read(4) == b"\0asm" for m in members)  # wasm object files
        assert paths["llvm"].stat().st_size > 0


def test_float16_build_takes_float16_params_and_keeps_float32_io(tiny_f16_clip):  # noqa: F811
    desc = json.loads(compile_stage.paths(tiny_f16_clip, "clip")["json"].read_text())
    assert desc["dtype"] == "float16"
    # float16, except tensors whose float16 size is not a multiple of 4 bytes (WebGPU could not bind them)
    for p in desc["webgpu"]["params"]:
        odd = (2 * int(np.prod(p["shape"]))) % 4 != 0
        assert p["dtype"] == ("float32" if odd else "float16"), p
    assert "float16" in {p["dtype"] for p in desc["webgpu"]["params"]}
    assert desc["inputs"][0]["dtype"] == "int32" and desc["output"]["dtype"] == "float32"
