"""pipeline.webgpu.flash_attention: the fused attention kernel, its import and its Relax rewrite.

The kernel's arithmetic is checked against numpy on TVM's CPU target (the same loops, serial) and, built for
WebGPU, on Dawn + lavapipe with WebGPU's default limits (tests/node/run_wgsl.mjs), float32 and float16, at the
shapes of SD v1.5 (self-attention with 8 heads of 40 .. 160, 77-token cross attention, the VAE's single head of
512) with fewer query rows where the software GPU would take minutes. The WebGPU builds of those layers at full
size must pass the limits check under ``default``. The split of single-head attention into two matmuls is checked
against numpy on the CPU.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import ROOT, runner_env
from pipeline.webgpu import build as webgpu_build
from pipeline.webgpu import flash_attention, inspection
from pipeline.webgpu import limits as webgpu_limits
from pipeline.toolchain import tvm_api

TOL = {"float32": 2e-5, "float16": 2e-3}


def numpy_attention(q, k, v, scale, causal=False):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = np.einsum("bihc,bjhc->bhij", q, k) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhij,bjhc->bihc", p / p.sum(-1, keepdims=True), v)


def _inputs(batch, q_len, kv_len, heads, head_dim, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 2).astype(dtype) for shape in
            [(batch, q_len, heads, head_dim), (batch, kv_len, heads, head_dim), (batch, kv_len, heads, head_dim)]]


def _assert_close(got, q, k, v, scale, dtype, causal=False):
    want = numpy_attention(q, k, v, scale, causal)
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=TOL[dtype], atol=TOL[dtype])


def test_key_blocks_fit_the_default_workgroup_storage():
    for dtype, size in (("float16", 2), ("float32", 4)):
        for head_dim in (40, 64, 80, 160, 512):
            keys = flash_attention.keys_per_block(head_dim, dtype)
            assert 2 * keys * head_dim * size <= flash_attention.TILE_BYTES < 16 << 10
            assert keys == flash_attention.MAX_KEYS or 4 * keys * head_dim * size > flash_attention.TILE_BYTES
    assert flash_attention.keys_per_block(40, "float16") == 64
    assert flash_attention.keys_per_block(512, "float32") == 2


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape,causal", [((2, 70, 77, 3, 40), False), ((1, 33, 19, 2, 160), False),
                                          ((1, 20, 64, 1, 512), False), ((2, 77, 77, 2, 64), True)],
                         ids=["ragged-tiles", "head160", "vae-head512", "clip-causal"])
def test_kernel_matches_numpy_on_cpu(dtype, shape, causal):
    import tvm

    batch, q_len, kv_len, heads, head_dim = shape
    scale = head_dim ** -0.5
    func = flash_attention.attention_kernel(batch, heads, q_len, kv_len, head_dim, dtype, scale, causal,
                                            gpu=False, rows=16, keys=8)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    q, k, v = _inputs(batch, q_len, kv_len, heads, head_dim, dtype)
    out = tvm_api.cpu_tensor(np.zeros(q.shape, dtype))
    lib["main"](*(tvm_api.cpu_tensor(x) for x in (q, k, v)), out)
    _assert_close(out.numpy(), q, k, v, scale, dtype, causal)


def run_on_dawn(node, tmp_path, func, args: dict, out_shape, dtype):
    """Build ``func`` for WebGPU and run its one kernel on Dawn (lavapipe, default limits): the output array."""
    import tvm

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    wgsl = inspection.webgpu_source(tvm.compile(mod, target=webgpu_build.target()))
    grid = inspection.launch_grids(mod)["main"]
    inputs = {}
    for name, array in args.items():
        inputs[f"{name}_ptr"] = str(tmp_path / f"{name}.bin")
        array.tofile(inputs[f"{name}_ptr"])
    out = tmp_path / "o.bin"
    nbytes = int(np.prod(out_shape)) * np.dtype(dtype).itemsize
    spec = {"wgsl": wgsl, "entry": "main_kernel", "grid": list(grid), "inputs": inputs,
            "outputs": {"o_ptr": [str(out), nbytes]}, "features": ["shader-f16"] if dtype == "float16" else []}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([node, str(ROOT / "tests" / "node" / "run_wgsl.mjs"), str(tmp_path / "spec.json")],
                          cwd=ROOT, env=runner_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.fromfile(out, dtype).reshape(out_shape)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape,causal", [((2, 100, 77, 8, 40), False), ((1, 64, 4096, 1, 40), False),
                                          ((2, 64, 77, 8, 160), False), ((1, 64, 1024, 1, 512), False),
                                          ((2, 77, 77, 12, 64), True)],
                         ids=["cross77-8x40", "4096-keys", "cross77-8x160", "vae-4096x512-rows", "clip-causal"])
def test_kernel_matches_numpy_on_webgpu_lavapipe(node, tmp_path, dtype, shape, causal):
    """The WebGPU kernel (workgroup memory, barriers, one thread per query row) on Dawn with default limits."""
    batch, q_len, kv_len, heads, head_dim = shape
    scale = head_dim ** -0.5
    func = flash_attention.attention_kernel(batch, heads, q_len, kv_len, head_dim, dtype, scale, causal)
    q, k, v = _inputs(batch, q_len, kv_len, heads, head_dim, dtype)
    got = run_on_dawn(node, tmp_path, func, {"q": q, "k": k, "v": v}, q.shape, dtype)
    _assert_close(got, q, k, v, scale, dtype, causal)


def _attention_module(q_shape, kv_shape, dtype, scale=None):
    from tvm import relax

    bb = relax.BlockBuilder()
    q = relax.Var("q", tvm_api.tensor_type(q_shape, dtype))
    k = relax.Var("k", tvm_api.tensor_type(kv_shape, dtype))
    v = relax.Var("v", tvm_api.tensor_type(kv_shape, dtype))
    with bb.function("main", [q, k, v]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.attention(q, k, v, scale=scale))
        bb.emit_func_output(out)
    return bb.get()


def _prim_funcs(mod):
    return [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm_api.tir().PrimFunc)]


def test_rewrite_makes_each_attention_one_kernel():
    mod = flash_attention.fuse_attention()(_attention_module((2, 64, 8, 40), (2, 77, 8, 40), "float16"))
    assert _prim_funcs(mod) == ["flash_attention"]
    assert "nn.attention" not in mod.script()


@pytest.mark.parametrize("mask,fused", [("TopLeft", True), ("BottomRight", False)])
def test_rewrite_fuses_top_left_causal_attention_only(mask, fused):
    from tvm import relax

    bb = relax.BlockBuilder()
    q = relax.Var("q", tvm_api.tensor_type((1, 8, 2, 16), "float32"))
    with bb.function("main", [q]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.attention(q, q, q, causal_mask=mask))
        bb.emit_func_output(out)
    mod = flash_attention.fuse_attention()(bb.get())
    assert (_prim_funcs(mod) == ["flash_attention"]) == fused and ("nn.attention" in mod.script()) != fused


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("q_shape,kv_shape", [((2, 4096, 8, 40), (2, 4096, 8, 40)), ((2, 4096, 8, 40), (2, 77, 8, 40)),
                                              ((2, 256, 8, 160), (2, 77, 8, 160)), ((1, 4096, 1, 512), (1, 4096, 1, 512))],
                         ids=["self-4096-8x40", "cross-77", "cross-8x160", "vae-4096x512"])
def test_sd15_attention_builds_within_the_default_limits(dtype, q_shape, kv_shape):
    """SD v1.5's attention layers at 512x512 compile for WebGPU and pass the limits check (``default``: 16 KiB
    workgroup storage, 256 invocations, 8 storage buffers, 128 MiB bindings): the UNet's as one kernel each, the
    VAE's single head as two matmuls and a softmax (``split_single_head_attention``)."""
    _lowered, _executable, use = webgpu_build.build(_attention_module(q_shape, kv_shape, dtype), "main", "default")
    limits = webgpu_limits.profile("default")
    if q_shape[2] == 1:
        assert "flash_attention_kernel" not in [k.name for k in use.kernels]
        assert sum("matmul" in k.name for k in use.kernels) == 2 and any("softmax" in k.name for k in use.kernels)
    else:
        assert [k.name for k in use.kernels] == ["flash_attention_kernel"]
        assert use.kernels[0].storage_buffers == 4
    assert all(k.workgroup_storage <= limits["maxComputeWorkgroupStorageSize"] for k in use.kernels)


def _run_on_cpu(mod, args):
    import tvm
    from tvm import relax

    exe = tvm.compile(relax.transform.LegalizeOps()(mod), target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](*(tvm_api.cpu_tensor(a) for a in args)).numpy()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_single_head_attention_as_two_matmuls_matches_numpy(dtype):
    """The split (scores, softmax, values: the VAE's attention) computes the attention, at the default scale and
    at another, float16 through float32 scores."""
    for scale in (None, 0.3):
        mod = _attention_module((2, 24, 1, 32), (2, 40, 1, 32), dtype, scale)
        split = flash_attention.split_single_head_attention(1 << 30)(mod)
        assert "nn.attention" not in split.script() and "nn.softmax" in split.script()
        q, k, v = _inputs(2, 24, 40, 1, 32, dtype)
        _assert_close(_run_on_cpu(split, (q, k, v)), q, k, v, scale or 32 ** -0.5, dtype)


def test_only_single_head_unmasked_attention_within_the_binding_splits():
    from tvm import relax

    def kept(mod, max_binding=1 << 30):
        return "nn.attention" in flash_attention.split_single_head_attention(max_binding)(mod).script()

    assert not kept(_attention_module((1, 64, 1, 512), (1, 64, 1, 512), "float16"))
    assert kept(_attention_module((1, 64, 2, 32), (1, 64, 2, 32), "float16"))  # two heads: the fused kernel's
    assert kept(_attention_module((1, 64, 1, 512), (1, 64, 1, 512), "float16"), max_binding=64 * 64 * 4 - 1)
    bb = relax.BlockBuilder()
    q = relax.Var("q", tvm_api.tensor_type((1, 8, 1, 16), "float32"))
    with bb.function("main", [q]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.attention(q, q, q, causal_mask="TopLeft"))
        bb.emit_func_output(out)
    assert kept(bb.get())


def test_mixed_precision_keeps_the_causal_mask_and_scale():
    """TVM's ToMixedPrecision rebuilds nn.attention without its attributes; keep_attention_attrs restores them."""
    from tvm import relax

    bb = relax.BlockBuilder()
    q = relax.Var("q", tvm_api.tensor_type((1, 8, 2, 16), "float32"))
    with bb.function("main", [q]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.attention(q, q, q, scale=0.25, causal_mask="TopLeft"))
        bb.emit_func_output(out)
    mixed = relax.transform.ToMixedPrecision(out_dtype="float32")
    kept = flash_attention.keep_attention_attrs(mixed, bb.get()).script()
    assert 'causal_mask="TopLeft"' in kept and "0.25" in kept and 'dtype="float16") = R.nn.attention' in kept
