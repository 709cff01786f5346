"""WebGPU limits at build time (pipeline.webgpu.limits, pipeline.webgpu.build, pipeline.webgpu.passes).

For each limit a small Relax module breaks it and the build must fail with one line naming the kernel or buffer,
the limit and the value. Kernel-level limits that TVM's default schedules never exceed under WebGPU's defaults
(workgroup size, invocations, workgroup storage, workgroups per dimension) are broken against a profile that
lowers just that one limit: the kernels and the measurement are real, the profile is the test's.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.webgpu import limits as wl
from pipeline.errors import WebsdError

WGSL = """
// Function: add_kernel
//----------------------------------------
@group(0) @binding(0) var<storage, read_write> a : array<f32>;
@group(0) @binding(1) var<storage, read_write> b : array<f16>;
@group(0) @binding(2) var<storage, read_write> c : array<f32>;
var<workgroup> red : array<f32, 100>;
var<workgroup> flag : f16;
@compute @workgroup_size(64, 2, 1)
fn add_kernel() {}
// Function: copy_kernel_1
@group(0) @binding(0) var<storage, read_write> x : array<f32>;
@group(0) @binding(1) var<uniform> podArgs : PODArgs;
var<workgroup> tile : array<vec4<f16>, 8>;
@compute @workgroup_size(256)
fn copy_kernel_1() {}
"""


def test_wgsl_kernels_are_measured():
    add, copy = wl.wgsl_kernels(WGSL)
    assert (add.name, add.storage_buffers, add.workgroup_size) == ("add_kernel", 3, (64, 2, 1))
    assert add.workgroup_storage == 400 + 16  # each variable rounded up to 16 bytes, as WebGPU counts them
    assert (copy.storage_buffers, copy.workgroup_size, copy.workgroup_storage) == (1, (256, 1, 1), 64)
    wl.attach_grids([add, copy], {"add": (70000, 3, 1), "copy": (5, 1, 1)})
    assert add.workgroups == (35000, 3, 2) and copy.workgroups == (5, 1, 1)  # tvmjs folds x >= 65536 into z
    assert add.limits()["maxComputeInvocationsPerWorkgroup"] == 128


def test_an_override_is_measured_in_place_of_its_twin():
    """The subgroup-matrix variant runs WGSL overrides in place of TVM's twins: their workgroup memory counts."""
    twin, other = wl.KernelUse("sg_kernel", 3, (32, 1, 1), 0, (9, 1, 1)), wl.KernelUse("add_kernel", 2)
    override = ("@group(0) @binding(0) var<storage, read_write> a : array<f16>;\n"
                "var<workgroup> tile : array<f16, 12288>;\n@compute @workgroup_size(32, 1, 1)\nfn sg_kernel() {}\n")
    use = wl.with_overrides(wl.ModuleUse([twin, other], {"x": 64}), {"sg_kernel": override})
    assert [(k.name, k.workgroup_storage, k.workgroups) for k in use.kernels] == [
        ("sg_kernel", 24576, (9, 1, 1)), ("add_kernel", 0, None)]
    with pytest.raises(WebsdError, match="kernel sg_kernel needs maxComputeWorkgroupStorageSize 24576"):
        wl.check("unet", use, "default")
    wl.check("unet", use, "desktop")  # 32 KiB there


def test_violations_name_kernel_limit_and_value():
    use = wl.ModuleUse([wl.KernelUse("k_kernel", storage_buffers=9)], {"weight w": 6, "input x": 300 << 20})
    found = wl.violations(use, wl.PROFILES["default"])
    assert any("kernel k_kernel needs maxStorageBuffersPerShaderStage 9 (limit 8)" in f for f in found)
    assert any("buffer weight w has 6 bytes, not a multiple of 4" in f for f in found)
    assert any("buffer input x" in f and "maxBufferSize" in f for f in found)
    with pytest.raises(WebsdError) as e:
        wl.check("unet", use, "default")
    assert "\n" not in str(e.value) and str(e.value).startswith("unet: the WebGPU build breaks the 'default'")
    with pytest.raises(WebsdError, match="unknown WebGPU limits profile 'huge'"):
        wl.profile("huge")


# --- real builds (the apache-tvm wheel) ------------------------------------------------------------------------

def _module(n_inputs=1, shape=(256,), dtype="float32", body=None):
    from tvm import relax

    bb = relax.BlockBuilder()
    args = [relax.Var(f"x{i}", relax.TensorType(shape, dtype)) for i in range(n_inputs)]
    with bb.function("main", args):
        with bb.dataflow():
            out = bb.emit_output(body(bb, args))
        bb.emit_func_output(out)
    return bb.get()


def _sum_kernel(n):
    """A Relax module calling one TIR kernel that reads ``n`` buffers: nothing can split it."""
    from tvm import relax, te

    def body(bb, args):
        xs = [te.placeholder((256,), "float32", name=f"p{i}") for i in range(n)]
        out = te.compute((256,), lambda i: sum(x[i] for x in xs), name="out")
        gv = bb.add_func(te.create_prim_func(xs + [out]).with_attr("global_symbol", f"sum{n}"), f"sum{n}")
        return relax.call_tir(gv, args, relax.TensorType((256,), "float32"))

    return _module(n, body=body)


def _build(mod, profile="default"):
    from pipeline.webgpu.build import build

    return build(mod, "test", profile)


@pytest.fixture
def tighter(monkeypatch):
    """Register profile "test": WebGPU's defaults with some limits lowered."""
    def make(**limits):
        monkeypatch.setitem(wl.PROFILES, "test", {**wl.WEBGPU_DEFAULTS, **limits})
        return "test"
    return make


def test_storage_buffers_over_the_limit_fail_the_build():
    with pytest.raises(WebsdError, match=r"kernel sum9_kernel needs maxStorageBuffersPerShaderStage 10 \(limit 8\)"
                                         r".*webgpu.limits=desktop"):
        _build(_sum_kernel(9))
    *_, use = _build(_sum_kernel(9), "desktop")  # the larger profile allows 10
    assert use.required()["maxStorageBuffersPerShaderStage"] == 10


def test_a_buffer_over_the_binding_and_buffer_size_fails_the_build():
    from tvm import relax

    mod = _module(shape=(300 << 18,), body=lambda bb, a: relax.op.nn.relu(a[0]))  # 300 MiB of float32
    with pytest.raises(WebsdError, match=r"buffer input x0 has 314572800 bytes, over maxStorageBufferBindingSize "
                                         r"134217728.*\(\+\d+ more\)"):
        _build(mod)


def test_a_binding_not_a_multiple_of_4_bytes_fails_the_build():
    from tvm import relax

    mod = _module(shape=(3,), dtype="float16", body=lambda bb, a: relax.op.nn.relu(a[0]))
    with pytest.raises(WebsdError, match=r"buffer input x0 has 6 bytes, not a multiple of 4"):
        _build(mod)


@pytest.mark.parametrize("limit, value", [
    ("maxComputeWorkgroupStorageSize", 1024),
    ("maxComputeInvocationsPerWorkgroup", 32),
    ("maxComputeWorkgroupSizeX", 4),
    ("maxComputeWorkgroupSizeY", 4),
    ("maxComputeWorkgroupsPerDimension", 4),
])
def test_kernel_limits_are_measured_on_real_kernels(tighter, limit, value):
    from tvm import relax

    mod = _module(2, shape=(256, 256), body=lambda bb, a: relax.op.matmul(a[0], a[1]))
    *_, use = _build(mod)  # fits WebGPU's defaults
    assert use.required()[limit] > value, use.required()
    with pytest.raises(WebsdError, match=rf"kernel \w+ needs {limit} \d+ \(limit {value}\)"):
        _build(mod, tighter(**{limit: value}))


def test_wide_concats_and_fusions_are_split_to_fit_and_stay_correct():
    import tvm
    from tvm import relax

    from pipeline.webgpu import passes

    def concat16(bb, a):
        return relax.op.concat(a, axis=0)

    def add12(bb, a):
        acc = a[0]
        for x in a[1:]:
            acc = bb.emit(relax.op.add(acc, x))
        return acc

    rng = np.random.default_rng(0)
    for n, body, ref in [(16, concat16, lambda xs: np.concatenate(xs)), (12, add12, lambda xs: np.sum(xs, 0))]:
        mod = _module(n, shape=(64,), body=body)
        *_, use = _build(mod)  # over 8 storage buffers as one kernel, so this fits only if split
        assert use.required()["maxStorageBuffersPerShaderStage"] <= 8
        # the same rewrites, run on the CPU, compute the same function
        split = passes.split_wide_concats(8)(mod)
        with tvm.target.Target("llvm"):
            split = relax.transform.FuseOps()(relax.transform.LegalizeOps()(split))
            split = passes.split_wide_fusions(8)(relax.transform.AnnotateTIROpPattern()(split))
        vm = relax.VirtualMachine(tvm.compile(split, "llvm"), tvm.cpu())
        xs = [rng.standard_normal(64).astype("float32") for _ in range(n)]
        got = vm["main"](*[tvm.runtime.tensor(x) for x in xs]).numpy()
        np.testing.assert_allclose(got, ref(xs), rtol=1e-6)


def test_storage_is_allocated_in_multiples_of_4_bytes():
    from tvm import relax

    from pipeline.webgpu.inspection import bound_buffers

    # a float32 input of 3 values -> a float16 intermediate of 6 bytes -> float32 output
    mod = _module(shape=(3,), body=lambda bb, a: relax.op.astype(
        bb.emit(relax.op.nn.relu(bb.emit(relax.op.astype(a[0], "float16")))), "float32"))
    lowered, _, use = _build(mod)
    assert all(v % 4 == 0 for v in bound_buffers(lowered).values()), bound_buffers(lowered)


def test_odd_sized_float16_weights_stay_float32():
    from pipeline.model.params import stored_dtype

    assert stored_dtype({"dtype": "float32", "shape": [3]}, "float16") == "float32"  # 6 bytes in float16
    assert stored_dtype({"dtype": "float32", "shape": [4, 3]}, "float16") == "float16"
    assert stored_dtype({"dtype": "float32", "shape": [3]}, "float32") == "float32"
    assert stored_dtype({"dtype": "int64", "shape": [3]}, "float16") == "int64"
