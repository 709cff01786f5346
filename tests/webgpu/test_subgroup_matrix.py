"""pipeline.webgpu.subgroup_matrix: the twin kernels (TVM's, on plain lavapipe) and their subgroup-matrix WGSL
overrides (on lavapipe from Mesa 26, which offers chromium-experimental-subgroup-matrix at 8x8x8, subgroup size 8),
each against numpy (matmuls) or torch (convolutions, attention), and the Relax rewrites that put the twins in
place."""
import dataclasses
import json
import re
import subprocess

import numpy as np
import pytest

from pipeline.errors import WebsdError
from pipeline.webgpu import subgroup_matrix as sm
from tests.conftest import ROOT, runner_env


LAVAPIPE = sm.PROFILES["lavapipe"]
GEMMS = [sm.Gemm(1, 64, 32, 48), sm.Gemm(1, 32, 64, 16, b_transposed=True), sm.Gemm(3, 16, 24, 40, b_batched=True),
         sm.Gemm(1, 128, 96, 64, b_transposed=True)]


def _twin_source(func, name: str) -> str:
    """TVM's WGSL of a twin PrimFunc."""
    from pipeline.webgpu import build as webgpu_build

    return webgpu_build.single_kernel(func, name)[0]


def _twin_wgsl(gemm, profile, subgroups=(1, 1)):
    block = sm.block_of(gemm, profile, subgroups=subgroups)
    return block, _twin_source(sm.gemm_twin(gemm, profile, block, subgroups), gemm.name)


def _dispatch(node, tmp_path, wgsl, entry, grid, inputs: dict, out_shape, use_override, out_dtype="float32",
              output="C_ptr"):
    """Run one kernel on Dawn (run_wgsl.mjs) with ``inputs`` {binding name: array}: its ``output``."""
    for name, array in inputs.items():
        array.tofile(tmp_path / f"{name}.bin")
    toggles, features = ((["allow_unsafe_apis"], ["shader-f16", "subgroups", sm.FEATURE]) if use_override
                         else ([], ["shader-f16"]))
    spec = {"wgsl": wgsl, "entry": entry, "grid": [*grid, 1], "features": features, "dawnToggles": toggles,
            "inputs": {name: str(tmp_path / f"{name}.bin") for name in inputs},
            "outputs": {output: [str(tmp_path / "c.bin"), int(np.prod(out_shape)) * np.dtype(out_dtype).itemsize]}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([node, str(ROOT / "tests" / "node" / "run_wgsl.mjs"), str(tmp_path / "spec.json")],
                          cwd=ROOT, env=runner_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.fromfile(tmp_path / "c.bin", out_dtype).reshape(out_shape)


def _run(node, tmp_path, gemm, profile, wgsl, use_override, subgroups=(1, 1)):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((gemm.batch, gemm.m, gemm.k)).astype("float16")
    b_shape = ((gemm.batch,) if gemm.b_batched else ()) + ((gemm.n, gemm.k) if gemm.b_transposed else (gemm.k, gemm.n))
    b = rng.standard_normal(b_shape).astype("float16")
    want = np.matmul(a.astype("float32"), np.swapaxes(b, -1, -2) if gemm.b_transposed else b.astype("float32"))
    rows, cols = sm.block_of(gemm, profile, subgroups=subgroups)
    grid = sm.grid(gemm, profile, (subgroups[0] * rows, subgroups[1] * cols))
    got = _dispatch(node, tmp_path, wgsl, f"{gemm.name}_kernel", grid, {"A_ptr": a, "B_ptr": b}, want.shape,
                    use_override)
    return got, want


@pytest.mark.parametrize("gemm", GEMMS, ids=lambda g: g.name)
def test_twin_kernel_computes_the_matmul(node, tmp_path, gemm):
    """TVM's build of the twin (what runs where the override does not) on plain lavapipe."""
    _, twin = _twin_wgsl(gemm, LAVAPIPE)
    got, want = _run(node, tmp_path, gemm, LAVAPIPE, twin, use_override=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("gemm", GEMMS, ids=lambda g: g.name)
def test_subgroup_matrix_override_computes_the_matmul(node_sm, tmp_path, gemm):
    """The override, in the twin's bindings and on its grid, with subgroupMatrixLoad/MultiplyAccumulate/Store."""
    block, twin = _twin_wgsl(gemm, LAVAPIPE)
    wgsl = sm.gemm_wgsl(gemm, LAVAPIPE, block, twin)
    assert "subgroupMatrixMultiplyAccumulate" in wgsl and "enable chromium_experimental_subgroup_matrix;" in wgsl
    got, want = _run(node_sm, tmp_path, gemm, LAVAPIPE, wgsl, use_override=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)  # float32 accumulation of float16 products


# the staged kernel: (down, across) subgroups sharing the tiles they copy; B shared, transposed and batched; the
# last with fewer vectors of A per step than threads (some threads copy none)
STAGED = [(GEMMS[0], (2, 2)), (GEMMS[1], (2, 1)), (sm.Gemm(3, 16, 32, 40, b_batched=True), (1, 2)),
          (GEMMS[3], (2, 2)), (sm.Gemm(1, 8, 64, 8), (1, 4))]


@pytest.mark.parametrize("gemm,subgroups", STAGED, ids=lambda c: c.name if isinstance(c, sm.Gemm) else str(c))
def test_staged_override_computes_the_matmul(node, node_sm, tmp_path, gemm, subgroups):
    """The staged override (its twin on plain lavapipe too: the same grid and workgroup), against numpy."""
    block, twin = _twin_wgsl(gemm, LAVAPIPE, subgroups)
    wgsl = sm.gemm_wgsl(gemm, LAVAPIPE, block, twin, subgroups)
    assert "a_tile" in wgsl and "array<vec4<f16>>" in wgsl and "enable subgroups;" in wgsl
    for runner, source, use_override in ((node_sm, wgsl, True), (node, twin, False)):
        got, want = _run(runner, tmp_path, gemm, LAVAPIPE, source, use_override, subgroups)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_override_needs_the_feature(node, tmp_path):
    """Where the adapter lacks the feature (plain lavapipe, a stock browser) the override does not compile: why the
    page runs the default variant there."""
    gemm = GEMMS[0]
    block, twin = _twin_wgsl(gemm, LAVAPIPE)
    with pytest.raises(AssertionError, match="subgroup_matrix"):
        _run(node, tmp_path, gemm, LAVAPIPE, sm.gemm_wgsl(gemm, LAVAPIPE, block, twin), use_override=False)


CONVS = [sm.Conv(2, 16, 8, 8, 32, 3, 3, 1, (1, 1, 1, 1)), sm.Conv(1, 8, 16, 16, 16, 1, 1),
         sm.Conv(1, 16, 16, 16, 16, 3, 3, 2, (0, 0, 1, 1)), sm.Conv(1, 24, 8, 16, 8, 3, 3, 1, (1, 1, 1, 1)),
         # the cast to float16 done in the kernel (its float32 sums staged through workgroup memory)
         sm.Conv(2, 16, 8, 8, 32, 3, 3, 1, (1, 1, 1, 1), "float16"),
         sm.Conv(1, 8, 16, 16, 16, 1, 1, 1, out_dtype="float16"),
         # split-k: the channels in 2 and 4 parts, each a workgroup's float32 partial sums
         sm.Conv(2, 16, 8, 8, 32, 3, 3, 1, (1, 1, 1, 1), splits=2), sm.Conv(1, 32, 8, 8, 16, 1, 1, 1, splits=4)]


def _run_conv(node, tmp_path, conv, use_override, subgroups=None, staged=LAVAPIPE.conv_staged,
              prefetch=LAVAPIPE.conv_prefetch):
    """The convolution's twin or override in the layout the build picks (conv_layout), or on ``subgroups``
    subgroups sharing the rows of a 4-row block; its weights ``staged`` through workgroup memory or not, its gather
    ``prefetch``ed into registers or not. A convolution in splits (``Conv.splits``): its partial sums added up."""
    import torch

    if subgroups is None:
        block, subgroups = sm.conv_layout(conv, LAVAPIPE)
    else:
        block = sm.block_of(conv.gemm, LAVAPIPE)
        block = (block[0] // subgroups, block[1])
    twin = _twin_source(sm.conv_twin(conv, LAVAPIPE, block, subgroups), conv.name)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((conv.batch, conv.c, conv.h, conv.w)).astype("float16")
    w = rng.standard_normal((conv.o, conv.c, conv.kh, conv.kw)).astype("float16")
    top, left, bottom, right = conv.pad
    padded = torch.nn.functional.pad(torch.tensor(x, dtype=torch.float32), (left, right, top, bottom))
    want = torch.nn.functional.conv2d(padded, torch.tensor(w, dtype=torch.float32), stride=conv.stride).numpy()
    wgsl = sm.conv_wgsl(conv, LAVAPIPE, block, twin, subgroups, staged, prefetch) if use_override else twin
    x_blocks, y_blocks = sm.grid(conv.gemm, LAVAPIPE, (subgroups * block[0], block[1]))
    got = _dispatch(node, tmp_path, wgsl, f"{conv.name}_kernel", (x_blocks, y_blocks * conv.splits),
                    {"X_ptr": x, "W_ptr": w}, conv.out_shape, use_override, conv.out_dtype)
    if conv.splits > 1:
        got = got.sum(axis=0)
    return got.astype("float32"), want.astype(conv.out_dtype).astype("float32")  # the cast the kernel does


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c.name)
def test_conv_twin_computes_the_convolution(node, tmp_path, conv):
    got, want = _run_conv(node, tmp_path, conv, use_override=False)
    np.testing.assert_allclose(got, want, rtol=2e-3 if conv.out_dtype == "float16" else 1e-5, atol=1e-4)


@pytest.mark.parametrize("prefetch", [False, True], ids=["gather", "prefetched-gather"])
@pytest.mark.parametrize("staged", [False, True], ids=["direct-weights", "staged-weights"])
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c.name)
def test_conv_override_computes_the_convolution(node_sm, tmp_path, conv, staged, prefetch):
    """Padding, stride 2, 1x1 and 3x3 kernels, reduction chunks of 8 and 16 through workgroup memory, float32 or
    float16 results; the weights read from storage or copied into workgroup memory, the gather between barriers or
    loaded a chunk ahead into registers."""
    got, want = _run_conv(node_sm, tmp_path, conv, use_override=True, staged=staged, prefetch=prefetch)
    if conv.out_dtype == "float16":  # the same sum rounded to float16 may land one float16 step apart
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_conv_layouts():
    """Up to the profile's subgroups where the output channels divide, blocks of at most its columns; under its
    workgroups the block loses rows, then columns, never subgroups; weights staged only in blocks of its rows."""
    nvidia = sm.PROFILES["nvidia"]
    vae = sm.Conv(1, 512, 128, 128, 512, 3, 3, 1, (1, 1, 1, 1))
    assert sm.conv_layout(vae, nvidia) == ((4, 2), 4) and sm.conv_staged(nvidia, (4, 2))
    assert sm.conv_layout(sm.Conv(2, 1280, 16, 16, 1280, 3, 3, 1, (1, 1, 1, 1)), nvidia) == ((1, 2), 4)
    assert sm.conv_layout(sm.Conv(2, 1280, 8, 8, 1280, 3, 3, 1, (1, 1, 1, 1)), nvidia) == ((1, 1), 4)
    assert sm.conv_layout(sm.Conv(2, 320, 64, 64, 320, 3, 3, 1, (1, 1, 1, 1)), nvidia) == ((1, 2), 4)
    assert sm.conv_layout(sm.Conv(2, 640, 32, 32, 640, 3, 3, 1, (1, 1, 1, 1)), nvidia) == ((2, 2), 4)
    assert sm.conv_layout(sm.Conv(1, 512, 64, 64, 512, 3, 3, 1, (1, 1, 1, 1)), nvidia) == ((4, 2), 4)
    assert sm.conv_staged(nvidia, (2, 2)) and not sm.conv_staged(nvidia, (1, 2)) and sm.conv_staged(LAVAPIPE, (1, 4))
    # 96 channels (6 matrices): 2 subgroups, as 4 do not divide them
    assert sm.conv_layout(sm.Conv(1, 16, 64, 64, 96, 3, 3, 1, (1, 1, 1, 1)),
                          dataclasses.replace(nvidia, conv_workgroups=1)) == ((1, 2), 2)
    # 24 channels: 3 matrices, no two subgroups
    assert sm.conv_layout(sm.Conv(1, 8, 8, 8, 24, 3, 3, 1, (1, 1, 1, 1)), LAVAPIPE) == ((1, 4), 1)
    assert sm.conv_layout(sm.Conv(1, 8, 8, 8, 7, 3, 3), LAVAPIPE) is None


@pytest.mark.parametrize("subgroups", [2, 4])
@pytest.mark.parametrize("conv", [CONVS[0], CONVS[4]], ids=lambda c: c.name)
def test_conv_override_on_several_subgroups(node, node_sm, tmp_path, conv, subgroups):
    """Several subgroups sharing one gather, each its own rows (bench_subgroup_matrix.py --sweep times them), and
    their twin on the same grid and workgroup."""
    for runner, use_override in ((node_sm, True), (node, False)):
        got, want = _run_conv(runner, tmp_path, conv, use_override, subgroups)
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 if conv.out_dtype == "float16" else 1e-4)


def test_blocks_names_and_requirements():
    assert sm.block_of(sm.Gemm(1, 64, 32, 48), LAVAPIPE) == (4, 4)
    assert sm.block_of(sm.Gemm(1, 77, 32, 48), LAVAPIPE) is None  # CLIP's 77 tokens: not a multiple of 8
    # on the nvidia profile a 4x4 block of 16x16 matrices that leaves 20 workgroups is halved until 64 or more
    assert sm.block_of(sm.Gemm(1, 256, 320, 320), sm.PROFILES["nvidia"]) == (2, 2)
    assert sm.block_of(sm.Gemm(1, 4096, 320, 320), sm.PROFILES["nvidia"]) == (4, 4)
    assert sm.block_of(sm.Gemm(1, 8192, 262144 // 64, 1152), sm.PROFILES["nvidia"]) == (4, 4)
    # the staged kernel where the profile asks for it and the output divides into its tiles, else the direct one
    assert sm.gemm_layout(sm.Gemm(1, 64, 32, 48), LAVAPIPE) == ((4, 2), (2, 2))
    assert sm.gemm_layout(sm.Gemm(3, 16, 24, 40, b_batched=True), LAVAPIPE) == ((2, 1), (1, 1))  # 24: 3 matrices
    # nvidia: staged on 2x1 subgroups, the block halved (rows first) until 64 workgroups; the direct kernel alone
    assert sm.gemm_layout(sm.Gemm(1, 4096, 320, 320), sm.PROFILES["nvidia"]) == ((4, 4), (2, 1))
    assert sm.gemm_layout(sm.Gemm(1, 1024, 320, 320), sm.PROFILES["nvidia"]) == ((2, 4), (2, 1))
    direct = dataclasses.replace(sm.PROFILES["nvidia"], gemm_subgroups=(1, 1))
    assert sm.gemm_layout(sm.Gemm(1, 4096, 320, 320), direct) == ((4, 4), (1, 1))
    # tiles whose one step would not fit 16 KiB (8x8 subgroups of 4x4 matrices): the direct kernel
    wide = dataclasses.replace(sm.PROFILES["nvidia"], gemm_subgroups=(8, 8))
    assert sm.gemm_layout(sm.Gemm(1, 8192, 8192, 16), wide) == ((4, 4), (1, 1))
    # A and B tiles within 16 KiB: 128 + 128 rows of 16x16 matrices two deep
    assert sm.gemm_depth(sm.Gemm(1, 4096, 4096, 512), sm.PROFILES["nvidia"], (4, 4), (2, 2)) == 32
    # rows zero padded to the fewest the layout takes: 2 x 77 text tokens to 160 (2x1 subgroups of 16 rows), the
    # time embedding's 2 rows to 16 (the direct kernel); lavapipe's 2x2 subgroups of 8 rows: 16 rows at a time
    nvidia = sm.PROFILES["nvidia"]
    text_keys = sm.Gemm(1, 154, 320, 768, b_transposed=True)
    assert sm.padded_rows(text_keys, nvidia) == sm.Gemm(1, 160, 320, 768, b_transposed=True)
    assert sm.padded_rows(sm.Gemm(1, 2, 1280, 320), nvidia).m == 16
    assert sm.padded_rows(sm.Gemm(1, 77, 32, 48), LAVAPIPE).m == 80
    assert sm.padded_rows(sm.Gemm(1, 64, 32, 48), LAVAPIPE) == sm.Gemm(1, 64, 32, 48)  # fits as it is
    assert sm.padded_rows(sm.Gemm(1, 64, 32, 36), LAVAPIPE) is None  # a reduction of 36: no padding of rows helps
    for gemm in GEMMS:
        assert sm.parse_name(gemm.name) == gemm
    with pytest.raises(WebsdError):
        sm.parse_name("fused_matmul_kernel")
    for conv in CONVS:
        assert sm.parse_conv_name(conv.name) == conv
    assert sm.conv_chunk(CONVS[0], LAVAPIPE, (4, 4)) == 16  # 144 = 9 x 16: two matrix depths per fill
    need = sm.PROFILES["nvidia"].requires()
    assert need["subgroup_size"] == 32 and sm.FEATURE in need["features"]
    assert "subgroups" in need["features"]  # convolutions on several subgroups use WGSL's subgroup_id
    assert need["subgroup_matrix_configs"] == [{"componentType": "f16", "resultComponentType": "f32",
                                                "M": 16, "N": 16, "K": 16}]


def test_rewrite_puts_twins_in_place_of_float16_matmuls():
    import tvm
    from tvm import relax

    from pipeline.toolchain import tvm_api

    bb = relax.BlockBuilder()
    x = relax.Var("x", tvm_api.tensor_type((2, 16, 32), "float16"))
    w = relax.Var("w", tvm_api.tensor_type((24, 32), "float16"))
    y = relax.Var("y", tvm_api.tensor_type((32, 16), "float16"))
    text = relax.Var("text", tvm_api.tensor_type((2, 7, 32), "float16"))  # 14 rows: padded to 16
    with bb.function("main", [x, w, y, text]):
        with bb.dataflow():
            linear = bb.emit(relax.op.matmul(x, bb.emit(relax.op.permute_dims(w)), out_dtype="float32"))
            plain = bb.emit(relax.op.matmul(x, y, out_dtype="float32"))
            half = bb.emit(relax.op.matmul(x, y))  # a float16 result: not these kernels' (float32 accumulators)
            short = bb.emit(relax.op.matmul(text, y, out_dtype="float32"))
            out = bb.emit_output(relax.Tuple([linear, plain, half, short]))
        bb.emit_func_output(out)
    mod = sm.rewrite_matmuls(LAVAPIPE)(bb.get())
    twins = sorted(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm_api.tir().PrimFunc))
    # the batch folds into the rows; the Linear reads w in place (transposed); 14 rows run as 16
    assert twins == ["sgmm_1x16x16x32", "sgmm_1x32x16x32", "sgmm_1x32x24x32_t"]
    calls = []
    relax.analysis.post_order_visit(mod["main"].body, lambda e: calls.append(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    assert calls.count("relax.matmul") == 1 and calls.count("relax.call_tir") == 3
    assert calls.count("relax.nn.pad") == 1 and calls.count("relax.strided_slice") == 1
    shapes = [[int(d) for d in f.shape] for f in tvm_api.expr_type(mod["main"].body.body).fields]
    assert shapes[0] == [2, 16, 24] and shapes[3] == [2, 7, 16]


def test_rewrite_puts_twins_in_place_of_float16_convolutions():
    from tvm import relax

    from pipeline.toolchain import tvm_api

    bb = relax.BlockBuilder()
    x = relax.Var("x", tvm_api.tensor_type((2, 16, 8, 8), "float16"))
    w = relax.Var("w", tvm_api.tensor_type((32, 16, 3, 3), "float16"))
    x4 = relax.Var("x4", tvm_api.tensor_type((1, 4, 8, 8), "float16"))
    w4 = relax.Var("w4", tvm_api.tensor_type((8, 4, 3, 3), "float16"))
    with bb.function("main", [x, w, x4, w4]):
        with bb.dataflow():
            fits = bb.emit(relax.op.nn.conv2d(x, w, padding=1, out_dtype="float32"))
            # 4 input channels: a 36-long reduction, not a multiple of the 8-deep matrices
            odd = bb.emit(relax.op.nn.conv2d(x4, w4, padding=1, out_dtype="float32"))
            out = bb.emit_output(relax.Tuple([fits, odd]))
        bb.emit_func_output(out)
    mod = sm.rewrite_convs(UNSPLIT)(bb.get())
    twins = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm_api.tir().PrimFunc)]
    assert twins == [sm.Conv(2, 16, 8, 8, 32, 3, 3, 1, (1, 1, 1, 1)).name]
    assert [int(d) for d in tvm_api.expr_type(mod["main"].body.body).fields[0].shape] == [2, 32, 8, 8]


UNSPLIT = dataclasses.replace(LAVAPIPE, conv_split_workgroups=0)


@pytest.mark.parametrize("cast", [False, True], ids=["float32", "cast-to-float16"])
def test_a_convolution_with_few_workgroups_splits_its_reduction(cast):
    """Under the profile's conv_split_workgroups the twin returns float32 partial sums of its parts of the channels
    (split first), and a sum over them (then the cast) gives the convolution's result."""
    import tvm
    from tvm import relax

    from pipeline.toolchain import tvm_api

    conv = sm.Conv(2, 16, 8, 8, 32, 3, 3, 1, (1, 1, 1, 1))  # lavapipe's layout: 4 workgroups
    assert sm.conv_splits(conv, UNSPLIT) == 1 and sm.conv_splits(conv, LAVAPIPE) == 2  # to 8 workgroups
    # each part whole matrix depths: 8 channels x 9 = 72 is, 4 x 9 = 36 is not
    assert sm.conv_splits(conv, dataclasses.replace(LAVAPIPE, conv_split_workgroups=1000)) == 2
    assert sm.conv_splits(sm.Conv(1, 64, 8, 8, 16, 3, 3, 1, (1, 1, 1, 1)),
                          dataclasses.replace(LAVAPIPE, conv_split_workgroups=1000)) == 8  # at most 8
    mod = _conv_module((2, 16, 8, 8), (32, 16, 3, 3), cast=cast)
    for rewrite in sm.rewrites(LAVAPIPE, 1 << 30):
        mod = rewrite(mod)
    assert _twins(mod) == [dataclasses.replace(conv, splits=2).name]
    calls = []
    relax.analysis.post_order_visit(mod["main"].body, lambda e: calls.append(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    assert calls.count("relax.add") == 1 and calls.count("relax.nn.conv2d") == 0  # the 2 parts added
    out = tvm_api.expr_type(mod["main"].body.body)
    assert [int(d) for d in out.shape] == [2, 32, 8, 8] and str(out.dtype) == ("float16" if cast else "float32")
    relax.analysis.well_formed(mod)


def _conv_module(x_shape, w_shape, cast: bool = False):
    """A Relax module of one padded convolution (float16 in, float32 out), cast to float16 after it if ``cast``."""
    from tvm import relax

    from pipeline.toolchain import tvm_api

    bb = relax.BlockBuilder()
    x = relax.Var("x", tvm_api.tensor_type(x_shape, "float16"))
    w = relax.Var("w", tvm_api.tensor_type(w_shape, "float16"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            conv = relax.op.nn.conv2d(x, w, padding=1, out_dtype="float32")
            out = bb.emit_output(relax.op.astype(bb.emit(conv), "float16") if cast else conv)
        bb.emit_func_output(out)
    return bb.get()


def _twins(mod) -> list[str]:
    from pipeline.toolchain import tvm_api

    return sorted(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm_api.tir().PrimFunc))


def test_a_convolution_whose_float32_result_is_over_the_binding_limit_stays_tvms():
    mod = _conv_module((1, 16, 32, 32), (16, 16, 3, 3))
    result_bytes = 16 * 32 * 32 * 4
    for limit, twins in ((result_bytes, 1), (result_bytes - 1, 0)):
        assert len(_twins(sm.rewrite_convs(UNSPLIT, max_binding=limit)(mod))) == twins, limit


def test_a_cast_after_a_convolution_goes_into_its_twin():
    from pipeline.toolchain import tvm_api

    mod = _conv_module((2, 16, 8, 8), (32, 16, 3, 3), cast=True)
    for rewrite in sm.rewrites(UNSPLIT, 1 << 30):
        mod = rewrite(mod)
    assert _twins(mod) == [sm.Conv(2, 16, 8, 8, 32, 3, 3, 1, (1, 1, 1, 1), "float16").name]  # no float32 twin
    assert str(tvm_api.expr_type(mod["main"].body.body).dtype) == "float16"


ATTENTIONS = [sm.Attention(1, 2, 32, 48, 16),  # Q, K and V read straight from storage
              sm.Attention(2, 3, 16, 24, 12),  # a head dim of 12: Q, K and V zero padded to 16 (as the rewrite)
              sm.Attention(1, 2, 16, 13, 16),  # 13 keys (as CLIP's 77 tokens): K and V copied in, padded
              sm.Attention(2, 2, 64, 64, 40)]  # SD v1.5's head dim 40, whole 8x8 matrices


def _run_attention(node, tmp_path, att, use_override, by_key=LAVAPIPE.attention_by_key, tiling=None,
                   one_pass=LAVAPIPE.attention_one_pass, key_scale=None):
    """The kernel of ``att`` on the head dim the rewrite pads it to (zero padded inputs, its output sliced back), and
    torch's attention of the unpadded inputs at the unpadded head dim's scale; ``by_key``: the override's softmax
    bookkeeping form (``attention_by_key``), ``one_pass``: one pass or two (``Tiling.one_pass``); ``key_scale``:
    each key's factor (kv_len values; default 1)."""
    import torch

    profile = dataclasses.replace(LAVAPIPE, attention_by_key=by_key)
    run = sm.attention.padded(att, LAVAPIPE)
    t = dataclasses.replace(tiling or sm.tiling(run, LAVAPIPE), one_pass=one_pass)
    twin = _twin_source(sm.attention_twin(run, LAVAPIPE, t), run.name)
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((att.batch, n, att.heads, att.head_dim)).astype("float16")
               for n in (att.q_len, att.kv_len, att.kv_len))
    # larger scores than N(0, 1) inputs give, so the softmax is far from uniform and the max matters
    q = (q * 3).astype("float16")
    if key_scale is not None:
        k = (k * np.asarray(key_scale, "float32")[None, :, None, None]).astype("float16")
    heads_first = [torch.tensor(x, dtype=torch.float32).transpose(1, 2) for x in (q, k, v)]
    want = torch.nn.functional.scaled_dot_product_attention(*heads_first).transpose(1, 2).numpy()
    wgsl = sm.attention_wgsl(run, profile, t, twin) if use_override else twin
    pad = [(0, 0)] * 3 + [(0, run.head_dim - att.head_dim)]
    got = _dispatch(node, tmp_path, wgsl, f"{run.name}_kernel", sm.attention_grid(run, LAVAPIPE, t),
                    {"q_ptr": np.pad(q, pad), "k_ptr": np.pad(k, pad), "v_ptr": np.pad(v, pad)},
                    (*want.shape[:-1], run.head_dim), use_override, "float16", output="o_ptr")
    return got[..., :att.head_dim].astype("float32"), want


@pytest.mark.parametrize("att", ATTENTIONS, ids=lambda a: a.name)
def test_attention_twin_computes_attention(node, tmp_path, att):
    got, want = _run_attention(node, tmp_path, att, use_override=False)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("one_pass", [False, True], ids=["two_passes", "one_pass"])
@pytest.mark.parametrize("by_key", [False, True], ids=["by_row", "by_key"])
@pytest.mark.parametrize("att", ATTENTIONS, ids=lambda a: a.name)
def test_attention_override_computes_attention(node_sm, tmp_path, att, by_key, one_pass):
    """Q K^T and P V on subgroup matrices, the keys in blocks, padded where they are not whole blocks; P is float16
    (as in flash attention), so the tolerance is float16's. Both forms of the softmax bookkeeping, in two passes and
    in one."""
    got, want = _run_attention(node_sm, tmp_path, att, use_override=True, by_key=by_key, one_pass=one_pass)
    np.testing.assert_allclose(got, want, rtol=4e-3, atol=4e-3)


@pytest.mark.parametrize("by_key", [False, True], ids=["by_row", "by_key"])
def test_one_pass_attention_rescales_when_the_max_moves(node_sm, tmp_path, by_key):
    """Keys that grow block by block: each block's scores pass the running max by far more than the slack, so
    without the rescale of the accumulators exp(score - max) would overflow float16 (checked here on the inputs)
    and the sums would be off by those factors."""
    att = sm.Attention(1, 2, 16, 64, 16)
    t = sm.tiling(att, LAVAPIPE)
    growth = np.repeat(np.arange(1, 64 // (t.keys * 8) + 1, dtype="float32") ** 2, t.keys * 8)
    got, want = _run_attention(node_sm, tmp_path, att, use_override=True, by_key=by_key, one_pass=True,
                               key_scale=growth)
    rng = np.random.default_rng(5)  # the inputs _run_attention draws: the premise, on the unscaled first block
    q, k = (rng.standard_normal((1, n, 2, 16)).astype("float16") for n in (16, 64))
    scores = np.einsum("bihd,bjhd->bhij", q.astype("float32") * 3, k.astype("float32") * growth[None, :, None, None])
    block_max = scores.reshape(1, 2, 16, -1, t.keys * 8).max(-1) / 4
    assert (block_max[..., -1] - block_max[..., 0]).min() > 2 * np.log(65504)
    np.testing.assert_allclose(got, want, rtol=4e-3, atol=4e-3)


def test_attention_by_key_with_more_keys_than_lanes(node_sm, tmp_path):
    """Blocks of 2 key matrices: each lane takes 2 of a row's keys before the shuffles reduce them."""
    att = sm.Attention(1, 2, 32, 48, 16)
    t = next(t for t in sm.tilings(att, LAVAPIPE) if t.keys == 2)
    got, want = _run_attention(node_sm, tmp_path, att, use_override=True, by_key=True, tiling=t)
    np.testing.assert_allclose(got, want, rtol=4e-3, atol=4e-3)


def test_attention_tilings():
    nvidia = sm.PROFILES["nvidia"]
    # SD v1.5 at 512x512: head dim 40 is not whole 16x16 matrices, so the rewrite pads it to 48 (scale still 40's)
    sd15 = sm.Attention(2, 8, 4096, 4096, 40)
    assert sm.tiling(sd15, nvidia) is None
    assert sm.attention.padded(sd15, nvidia) == sm.Attention(2, 8, 4096, 4096, 48, scale_dim=40)
    assert sm.attention.padded(sd15, nvidia).scale == 40 ** -0.5
    assert sm.attention.padded(sd15, LAVAPIPE) == sd15  # whole 8x8 matrices
    one_pass = nvidia.attention_one_pass  # the profile's form, in every tiling
    assert sm.tiling(sm.attention.padded(sd15, nvidia), nvidia) == sm.attention.Tiling(4, 1, False, one_pass)
    assert sm.tiling(sm.Attention(2, 8, 1024, 1024, 80), nvidia) == sm.attention.Tiling(2, 1, False, one_pass)
    assert sm.tiling(sm.Attention(2, 8, 1024, 77, 80), nvidia) == sm.attention.Tiling(2, 1, True, one_pass)
    for att in (sd15, sm.Attention(2, 8, 256, 77, 160), *ATTENTIONS):
        for profile in (nvidia, LAVAPIPE):
            run = sm.attention.padded(att, profile)
            t = sm.tiling(run, profile)
            if t:
                assert t.storage(profile.m, run.head_dim) <= 16384  # WebGPU's default workgroup storage
                assert sm.attention.parse_name(run.name) == run
    assert sm.tiling(sm.Attention(1, 8, 77, 77, 64), nvidia) is None  # CLIP: 77 query rows, not whole matrices


def test_rewrite_puts_twins_in_place_of_float16_attention():
    import tvm
    from tvm import relax

    from pipeline.toolchain import tvm_api

    bb = relax.BlockBuilder()
    q = relax.Var("q", tvm_api.tensor_type((2, 32, 2, 16), "float16"))
    kv = relax.Var("kv", tvm_api.tensor_type((2, 13, 2, 16), "float16"))
    q12 = relax.Var("q12", tvm_api.tensor_type((2, 32, 2, 12), "float16"))
    q32 = relax.Var("q32", tvm_api.tensor_type((2, 32, 2, 16), "float32"))
    with bb.function("main", [q, kv, q12, q32]):
        with bb.dataflow():
            cross = bb.emit(relax.op.nn.attention(q, kv, kv))
            narrow = bb.emit(relax.op.nn.attention(q12, q12, q12))  # head dim 12: padded to 16 around the twin
            causal = bb.emit(relax.op.nn.attention(q, q, q, causal_mask="TopLeft"))  # CLIP's: stays
            scaled = bb.emit(relax.op.nn.attention(q, q, q, scale=0.5))  # not the default scale: stays
            single = bb.emit(relax.op.nn.attention(q32, q32, q32))  # float32: stays
            out = bb.emit_output(relax.Tuple([cross, narrow, causal, scaled, single]))
        bb.emit_func_output(out)
    mod = sm.rewrite_attention(LAVAPIPE)(bb.get())
    assert _twins(mod) == sorted([sm.Attention(2, 2, 32, 13, 16).name, sm.Attention(2, 2, 32, 32, 16, 12).name])
    calls = []
    relax.analysis.post_order_visit(mod["main"].body, lambda e: calls.append(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    assert calls.count("relax.nn.attention") == 3 and calls.count("relax.call_tir") == 2
    assert calls.count("relax.nn.pad") == 3 and calls.count("relax.strided_slice") == 1
    relax.analysis.well_formed(mod)  # raises on the first violation
    assert [int(x) for x in tvm_api.expr_type(mod["main"].body.body).fields[1].shape] == [2, 32, 2, 12]


def _nvidia_overrides():
    """(name, override) of a matmul, a convolution with the cast and the attention tilings, on the H200's profile."""
    nvidia = sm.PROFILES["nvidia"]
    gemm = sm.Gemm(1, 64, 64, 32, b_transposed=True)
    conv = sm.Conv(1, 32, 8, 8, 32, 3, 3, 1, (1, 1, 1, 1), "float16")
    out = [(gemm.name, sm.gemm_wgsl(gemm, nvidia, sm.block_of(gemm, nvidia),
                                    _twin_source(sm.gemm_twin(gemm, nvidia, sm.block_of(gemm, nvidia)), gemm.name))),
           # the staged form, as the sweep builds it
           (gemm.name, sm.gemm_wgsl(gemm, nvidia, (2, 1), _twin_source(sm.gemm_twin(gemm, nvidia, (2, 1), (2, 2)),
                                                                       gemm.name), (2, 2))),
           (conv.name, sm.conv_wgsl(conv, nvidia, sm.block_of(conv.gemm, nvidia), _twin_source(
               sm.conv_twin(conv, nvidia, sm.block_of(conv.gemm, nvidia)), conv.name))),
           (conv.name, sm.conv_wgsl(conv, nvidia, (1, 4), _twin_source(sm.conv_twin(conv, nvidia, (1, 4), 2),
                                                                       conv.name), 2, staged=True)),
           (conv.name, sm.conv_wgsl(conv, nvidia, (1, 4), _twin_source(sm.conv_twin(conv, nvidia, (1, 4), 2),
                                                                       conv.name), 2, staged=True, prefetch=True))]
    # head dim 40 (as the rewrite pads it), 77 keys (K, V padded in workgroup memory), and straight from storage
    # (each also with its softmax bookkeeping by key, as the sweep builds it: 16 lanes a row, 2 rows at a time;
    # and each in one pass and in two)
    for att in (sm.Attention(1, 2, 64, 64, 48, 40), sm.Attention(1, 2, 32, 77, 80), sm.Attention(1, 2, 32, 64, 80)):
        t = sm.tiling(att, nvidia)
        twin = _twin_source(sm.attention_twin(att, nvidia, t), att.name)
        for by_key in (False, True):
            for one_pass in (False, True):
                out.append((att.name, sm.attention_wgsl(att, dataclasses.replace(nvidia, attention_by_key=by_key),
                                                        dataclasses.replace(t, one_pass=one_pass), twin)))
    return out


def test_nvidia_overrides_pass_dawns_wgsl_validation(node_sm, tmp_path):
    """The H200's kernels (16x16x16 matrices, subgroup 32) cannot run here, but Dawn validates their WGSL on Mesa 26
    and refuses only the matrix shape when it creates the pipeline: so what CI cannot run is at least valid WGSL."""
    for name, wgsl in _nvidia_overrides():
        buffers = re.findall(r"@binding\(\d+\) var<storage[^>]*> (\w+)", wgsl)  # small ones: it never runs
        spec = {"wgsl": wgsl, "entry": f"{name}_kernel", "grid": [1, 1, 1], "features": ["shader-f16", sm.FEATURE],
                "dawnToggles": ["allow_unsafe_apis"], "inputs": {},
                "outputs": {b: [str(tmp_path / f"{b}.bin"), 16] for b in buffers}}
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.run([node_sm, str(ROOT / "tests" / "node" / "run_wgsl.mjs"), str(tmp_path / "spec.json")],
                              cwd=ROOT, env=runner_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert "Subgroup matrix usage found which is not supported by the device" in proc.stderr, (name, proc.stderr)
        assert "Unknown configuration is M(0), N(16), K(16), f16" in proc.stderr, (name, proc.stderr)


@pytest.mark.parametrize("profile", ["lavapipe", "nvidia"])
def test_attention_overrides_declare_the_workgroup_memory_their_tiling_counts(profile):
    """The limits check measures an override's workgroup variables (limits.with_overrides): the tiling's count is
    what it declares, with none of the twin's own left in TVM's header."""
    from pipeline.webgpu import limits

    p = sm.PROFILES[profile]
    for att in (*ATTENTIONS, sm.Attention(1, 2, 64, 77, 40)):
        run = sm.attention.padded(att, p)
        t = sm.tiling(run, p)
        if t is None:
            continue
        wgsl = sm.attention_wgsl(run, p, t, _twin_source(sm.attention_twin(run, p, t), run.name))
        (use,) = limits.wgsl_kernels(f"// Function: {run.name}_kernel\n{wgsl}")
        assert use.workgroup_storage == t.storage(p.m, run.head_dim) <= 16384, att
