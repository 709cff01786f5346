"""pipeline.webgpu.kernels: group norm as three parallel kernels, and the Matmul tiling choices.

The arithmetic is checked on the CPU (TVM's llvm target) against numpy: the three TE stages chained into one
function, with chunks that cross channel boundaries. The hand schedule is checked by building for WebGPU: the
partial sums launch one workgroup per (batch, group, chunk). The whole chain on a GPU is checked by the e2e test
(tests/e2e, the tiny model's group norms in Chromium) and benchmarks/bench_webgpu.py (SD v1.5 on the H200).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline import config
from pipeline.webgpu import inspection
from pipeline.webgpu import kernels as gpu_kernels
from pipeline.toolchain import tvm_api


def numpy_group_norm(x, gamma, beta, groups, eps):
    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, groups, -1)
    y = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return y.reshape(x.shape) * gamma.reshape(shape) + beta.reshape(shape)


def test_chunks_divide_each_group_evenly():
    assert gpu_kernels.chunks_per_group([1, 128, 512, 512], 32, 4096) == 256
    assert gpu_kernels.chunks_per_group([2, 8, 6, 10], 4, 16) == 6  # 120 per group: 7 does not divide it
    assert gpu_kernels.chunks_per_group([2, 1280, 8, 8], 32, 4096) == 1  # smaller than one chunk


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 2e-3)])
def test_three_stages_match_numpy(dtype, tol):
    import tvm
    from tvm import te

    shape, groups, eps = [2, 8, 6, 10], 4, 1e-5
    partial, statistics, normalize = gpu_kernels.group_norm_te(shape, groups, eps, chunk=16)
    x = te.placeholder(shape, dtype, name="x")
    gamma = te.placeholder([shape[1]], dtype, name="gamma")
    beta = te.placeholder([shape[1]], dtype, name="beta")
    sums, squares = partial(x)
    out = normalize(x, statistics(sums, squares), gamma, beta)
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, gamma, beta, out])}), target="llvm")

    rng = np.random.default_rng(0)
    args = [rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape[1]), rng.standard_normal(shape[1])]
    args = [a.astype(dtype) for a in args]
    got = tvm_api.cpu_tensor(np.zeros(shape, dtype))
    lib["main"](*[tvm_api.cpu_tensor(a) for a in args], got)
    want = numpy_group_norm(*[a.astype(np.float64) for a in args], groups, eps)
    np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=tol, atol=tol * 10)


def _module(body, *arg_types):
    """A Relax module whose ``main`` takes tensors of ``arg_types`` ((shape, dtype) pairs) and returns
    ``body(bb, *args)``."""
    from tvm import relax

    bb = relax.BlockBuilder()
    args = [relax.Var(f"a{i}", relax.TensorType(shape, dtype)) for i, (shape, dtype) in enumerate(arg_types)]
    with bb.function("main", args):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *args))
        bb.emit_func_output(out)
    return bb.get()


def _group_norm_module(shape, dtype="float16", **attrs):
    from tvm import relax

    def body(bb, x, g, b):
        y = bb.emit(relax.op.nn.group_norm(x, g, b, 4, 1, list(range(2, len(shape))), **attrs))
        return relax.op.nn.silu(y)

    return _module(body, (shape, dtype), ((shape[1],), dtype), ((shape[1],), dtype))


def _conv_module(x_shape, w_shape, dtype, **attrs):
    from tvm import relax

    return _module(lambda bb, x, w: relax.op.nn.conv2d(x, w, out_dtype="float32", **attrs),
                   (x_shape, dtype), (w_shape, dtype))


def _kernels(mod):
    T = tvm_api.tir()
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, T.PrimFunc)}


def test_rewrite_replaces_group_norm_with_three_kernels():
    import tvm

    mod = gpu_kernels.split_group_norm(chunk=64)(_group_norm_module((2, 8, 16, 16)))
    assert "R.nn.group_norm" not in mod.script()
    kernels = _kernels(mod)
    assert sorted(kernels) == ["group_norm_apply", "group_norm_partial", "group_norm_stats"]
    partial = kernels["group_norm_partial"]
    assert int(partial.attrs["op_pattern"]) == gpu_kernels.OPAQUE  # FuseOps keeps it (and its schedule) apart
    named = tvm.IRModule({"group_norm_partial": partial.with_attr("global_symbol", "group_norm_partial")})
    assert inspection.launch_grids(named)["group_norm_partial"] == (2 * 4 * 8, 1, 1)


def test_rewrite_leaves_what_it_does_not_handle():
    mod = gpu_kernels.split_group_norm()(_group_norm_module((2, 8, 16, 16), center=False))
    assert "R.nn.group_norm(" in mod.script() and not _kernels(mod)


def test_webgpu_build_fuses_the_silu_into_the_normalize_kernel():
    from pipeline.webgpu.build import build

    lowered, _, use = build(_group_norm_module((1, 8, 64, 64)), "test", "default")
    names = sorted(_kernels(lowered))
    assert names == ["fused_group_norm_apply_silu", "group_norm_partial", "group_norm_stats"], names
    grids = inspection.launch_grids(lowered)
    assert grids["group_norm_partial"][0] == 4 * gpu_kernels.chunks_per_group([1, 8, 64, 64], 4, 4096)
    assert {k.name for k in use.kernels} >= {"group_norm_partial_kernel", "fused_group_norm_apply_silu_kernel"}


def test_matmul_tilings_are_the_config_choices():
    field = next(f for f in dataclasses.fields(config.WebgpuConfig) if f.name == "matmul")
    assert set(field.metadata["choices"]) == set(gpu_kernels.MATMUL_CONFIGS)
    assert field.default in gpu_kernels.MATMUL_CONFIGS
    for name in gpu_kernels.MATMUL_CONFIGS:
        matmul = gpu_kernels.schedule_rules(name)[0]
        assert isinstance(matmul, tvm_api.dlight().gpu.Matmul)


def test_split_k_only_for_small_outputs_with_long_reductions():
    assert gpu_kernels.split_k(1, 4096, 40, 4096) == 8  # sliced attention's probs @ V at SD v1.5 size
    assert gpu_kernels.split_k(1, 4096, 4096, 40) == 1  # q @ k^T: short reduction
    assert gpu_kernels.split_k(2, 4096, 320, 320) == 1  # a projection: enough output tiles
    assert gpu_kernels.split_k(1, 64, 64, 768) == 4  # stops where a part would be shorter than 4 tiles (128)
    assert gpu_kernels.split_k(1, 64, 64, 256) == 2


def test_split_k_matmul_matches_numpy_on_cpu():
    import tvm
    from tvm import relax

    batch, m, k, n = 2, 64, 1024, 8
    mod = gpu_kernels.split_k_matmul()(_module(lambda bb, a, b: relax.op.matmul(a, b, out_dtype="float32"),
                                               ((batch, m, k), "float32"), ((batch, k, n), "float32")))
    assert "R.matmul" not in mod.script() and "matmul_split_k" in mod.script()
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((batch, m, k), dtype=np.float32), rng.standard_normal((batch, k, n), dtype=np.float32)
    got = vm["main"](tvm_api.cpu_tensor(x), tvm_api.cpu_tensor(y)).numpy()
    np.testing.assert_allclose(got, x @ y, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("stride", [1, 2])
def test_split_k_conv2d_matches_the_plain_convolution_on_cpu(stride):
    import tvm
    from tvm import relax

    def module():
        return _conv_module((1, 64, 6, 6), (8, 64, 3, 3), "float32", strides=stride, padding=1)

    split = gpu_kernels.split_k_conv2d()(module())
    assert "R.nn.conv2d" not in split.script() and "conv2d_split_k" in split.script()
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((1, 64, 6, 6), dtype=np.float32), rng.standard_normal((8, 64, 3, 3), dtype=np.float32)]
    outs = []
    for mod in (split, module()):
        vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        outs.append(vm["main"](*[tvm_api.cpu_tensor(a) for a in args]).numpy())
    assert outs[0].shape == (1, 8, 6 // stride, 6 // stride)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)


def test_split_k_conv2d_leaves_convolutions_that_fill_the_gpu():
    mod = _conv_module((2, 320, 64, 64), (320, 320, 3, 3), "float16", padding=1)
    assert "R.nn.conv2d" in gpu_kernels.split_k_conv2d()(mod).script()
