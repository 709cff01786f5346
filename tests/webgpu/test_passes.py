"""Our Relax passes (pipeline.webgpu.passes); the ones that fit the limits are tested in test_limits.py."""
from __future__ import annotations

from pipeline.webgpu import passes


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
    mod = passes.gather_before_cast(bb.get())
    assert "(1000, 8), dtype=\"float32\"" not in mod.script()
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    weights = np.random.default_rng(0).standard_normal((1000, 8)).astype("float16")
    index = np.array([[0, 5, 999], [3, 3, 1]], dtype="int32")
    out = vm["main"](tvm.runtime.tensor(index), tvm.runtime.tensor(weights)).numpy()
    assert out.dtype == np.float32 and np.array_equal(out, weights[index].astype("float32"))
