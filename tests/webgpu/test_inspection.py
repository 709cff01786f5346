"""What a WebGPU build contains (pipeline.webgpu.inspection): buffer sizes, kernel calls WebGPU would reject."""
from __future__ import annotations

from pipeline.webgpu import inspection
from pipeline.webgpu import build as webgpu_build


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
    target = webgpu_build.target()
    with target:
        lowered = relax.get_default_pipeline(target)(bb.get())
    sizes = inspection.buffer_sizes(lowered)
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
    target = webgpu_build.target()
    with target:
        lowered = relax.get_default_pipeline(target)(bb.get())
    assert inspection.aliased_kernel_calls(lowered) == ["concatenate(x twice)"]


def test_bound_buffers_of_one_entry_leave_the_other_functions_inputs_out():
    """With several public Relax functions, only the entry's inputs count (the others are not the page's)."""
    from tvm import relax

    bb = relax.BlockBuilder()
    for name, n in (("first", 4), ("second", 8), ("third", 16)):
        x = relax.Var(f"x_{name}", relax.TensorType((n,), "float32"))
        with bb.function(name, [x]):
            bb.emit_func_output(x)
    mod = bb.get()
    assert inspection.bound_buffers(mod, "first") == {"input x_first": 16}
    assert inspection.bound_buffers(mod, "second") == {"input x_second": 32}
    assert inspection.bound_buffers(mod) == {"input x_first": 16, "input x_second": 32, "input x_third": 64}


def test_tensor_bytes():
    assert inspection.tensor_bytes([3, 5], "float16") == 30
    assert inspection.tensor_bytes((2,), "int64") == 16
    assert inspection.tensor_bytes(None, "float32") == 0
