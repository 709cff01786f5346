"""Relax rewrites that give TVM's default GPU schedules (dlight) ops in a form they schedule well.

Measured on an NVIDIA H200 through Dawn (benchmarks/results/webgpu-sd15-random-h200.md, before this module): the
legalized ``group_norm`` is one kernel that dlight's GeneralReduction runs in a *single* workgroup of 64 threads,
for the whole tensor. It was 59% of the SD v1.5 UNet's GPU time and 95% of the VAE's (0.4 s per call at 512x512).
``split_group_norm`` replaces it with three kernels that each parallelise:

  1. partial sums: ``sum x`` and ``sum x*x`` (float32) over chunks of ~``chunk`` elements of each group, one
     workgroup per (batch, group, chunk), a cross-thread reduction inside it;
  2. statistics: per (batch, group) mean and 1/std from the chunks (a tiny reduction);
  3. normalise + affine: elementwise, so FuseOps fuses the SiLU (or add) after it into the same kernel, and
     dlight's Fallback spreads it over the whole GPU.

Nothing the size of the activation is stored in float32 (a float16 VAE activation would break WebGPU's 128 MiB
binding limit), and the arithmetic is TVM's own legalization's: float32 sums, var = E[x^2] - E[x]^2, affine in
float32, cast last.

``split_k_matmul`` and ``split_k_conv2d`` split the reduction of matmuls and convolutions whose output is too
small to fill the GPU (sliced attention's probs @ V; 1280-channel convolutions at 8x8), and ``schedule_rules`` is
dlight's rule list with the Matmul rule's tiling chosen by ``webgpu.matmul``. The pass list
(pipeline.webgpu.build) runs ``rewrites()`` and ``schedule_rules()``.
"""
from __future__ import annotations

from math import prod

from ..toolchain import tvm_api
from . import passes


def static_shape(ty) -> list[int] | None:
    """A Relax tensor type's shape as ints, or None when it has none or a dimension is symbolic."""
    shape = getattr(ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm_api.tir().IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def chunks_per_group(shape, num_groups: int, chunk: int) -> int:
    """Into how many chunks the partial sums split each group of a tensor of ``shape``: the most that divide the
    group evenly with at least ``chunk`` elements each (at least 1)."""
    per_group = prod(shape[1:]) // num_groups
    for k in range(max(1, per_group // chunk), 0, -1):
        if per_group % k == 0:
            return k
    return 1


def group_norm_te(shape, num_groups: int, epsilon: float, chunk: int):
    """The three TE functions (partial sums, statistics, normalise) of a channel-first group norm of a tensor of
    ``shape`` (N, C, *spatial); see the module doc."""
    from tvm import te

    T = tvm_api.tir()
    n, c, *spatial = (int(s) for s in shape)
    per_channel = prod(spatial)
    per_group = c // num_groups * per_channel
    k = chunks_per_group(shape, num_groups, chunk)
    length = per_group // k
    f32 = "float32"

    def unravel(flat):
        idx = []
        for extent in reversed(spatial):
            idx.append(flat % extent)
            flat = flat // extent
        return idx[::-1]

    sum_and_squares = te.comm_reducer(lambda a, b: (a[0] + b[0], a[1] + b[1]),
                                      lambda t0, t1: (T.const(0, t0), T.const(0, t1)), name="sum_and_squares")

    def partial_sums(data):
        j = te.reduce_axis((0, length), name="j")

        def at(b, g, part):
            flat = part * length + j
            v = data[(b, g * (c // num_groups) + flat // per_channel, *unravel(flat % per_channel))].astype(f32)
            return sum_and_squares((v, v * v), axis=j)

        return te.compute((n, num_groups, k), at, name="group_norm_partial")

    def statistics(sums, squares):
        r = te.reduce_axis((0, k), name="r")
        total, total_sq = te.compute((n, num_groups), lambda b, g: sum_and_squares(
            (sums[b, g, r], squares[b, g, r]), axis=r), name="group_norm_total")

        def at(b, g, which):
            mean = total[b, g] / float(per_group)
            rstd = T.rsqrt(total_sq[b, g] / float(per_group) - mean * mean + T.const(epsilon, f32))
            return T.Select(which == 0, mean, rstd)

        return te.compute((n, num_groups, 2), at, name="group_norm_stats")

    def normalize(data, stats, scale, shift):
        def at(b, ch, *rest):
            g = ch // (c // num_groups)
            v = (data[(b, ch, *rest)].astype(f32) - stats[b, g, 0]) * stats[b, g, 1]
            return (v * scale[ch].astype(f32) + shift[ch].astype(f32)).astype(data.dtype)

        return te.compute(data.shape, at, name="group_norm_apply")

    return partial_sums, statistics, normalize


# WebGPU's default maxComputeInvocationsPerWorkgroup is 256
THREADS = 256
OPAQUE = 8  # relax's OpPatternKind.kOpaque: FuseOps leaves the kernel as it is (and so keeps its schedule)


def partial_sums_kernel(shape, dtype: str, num_groups: int, chunk: int):
    """The hand-scheduled partial-sums PrimFunc: one workgroup per (batch, group, chunk); each of its ``THREADS``
    threads sums a strided slice (neighbouring threads read neighbouring elements), then the threads reduce
    together in workgroup memory."""
    from tvm import te

    partial_sums, _, _ = group_norm_te(shape, num_groups, 0.0, chunk)
    data = te.placeholder(shape, dtype, name="x")
    sums, squares = partial_sums(data)
    sch = tvm_api.schedule(te.create_prim_func([data, sums, squares]))
    block = tvm_api.schedule_block(sch, "group_norm_partial")
    b, g, part, j = sch.get_loops(block)
    _, tx = sch.split(j, factors=[None, THREADS])
    rf = sch.rfactor(tx, 0)
    bx = sch.fuse(*sch.get_loops(rf)[:3])
    _, r, tx = sch.get_loops(rf)
    sch.reorder(bx, tx, r)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.set_scope(rf, 0, "local")
    sch.set_scope(rf, 1, "local")
    sch.reverse_compute_at(block, bx, preserve_unit_loops=True)
    _, tx, *rest = sch.get_loops(block)  # the write-back: a cross-thread reduction over the threads' sums
    sch.reorder(sch.fuse(*rest), tx)
    sch.bind(tx, "threadIdx.x")
    sch.decompose_reduction(rf, r)
    # no global_symbol: the builder names it (one per shape) and AttachGlobalSymbol adds it
    return tvm_api.mark_scheduled(sch.mod["main"]).with_attr("op_pattern", OPAQUE).without_attr("global_symbol")


def split_group_norm(chunk: int = 4096):
    """A module pass: every channel-first ``relax.nn.group_norm`` with scale and shift becomes the three kernels
    of the module doc. Others (another channel axis, no affine) are left to TVM."""
    from tvm import relax

    def split(mutator, call):
        attrs, ty = call.attrs, tvm_api.expr_type(call.args[0])
        shape = static_shape(ty)
        if not (shape is not None and len(shape) >= 3 and attrs.center and attrs.scale
                and int(attrs.channel_axis) == 1 and [int(a) for a in attrs.axes] == list(range(2, len(shape)))):
            return None
        x, gamma, beta = call.args
        groups, dtype = int(attrs.num_groups), str(ty.dtype)
        _, statistics, normalize = group_norm_te(shape, groups, float(attrs.epsilon), chunk)
        kernel = partial_sums_kernel(shape, dtype, groups, chunk)
        partial_ty = tvm_api.tensor_type([shape[0], groups, chunks_per_group(shape, groups, chunk)], "float32")
        bb = mutator.builder_
        sums = bb.emit(relax.call_tir(bb.add_func(kernel, "group_norm_partial"), [x], [partial_ty, partial_ty]))
        stats = bb.emit_te(statistics, relax.TupleGetItem(sums, 0), relax.TupleGetItem(sums, 1),
                           primfunc_name_hint="group_norm_stats")
        return bb.call_te(normalize, x, stats, gamma, beta, primfunc_name_hint="group_norm_apply")

    return passes.call_rewrite_pass("relax.nn.group_norm", split, "SplitGroupNorm")


def split_k(batch: int, m: int, n: int, k: int, tile: int = 32, enough: int = 2048, most: int = 16) -> int:
    """Into how many parts to split the reduction of a (batch, m, k) x (batch, k, n) matmul: 1 when its output
    tiles (``tile`` x ``tile``, one workgroup each) already fill the GPU, else the fewest powers of two up to
    ``most`` that reach ``enough`` workgroups, each part still ``4 * tile`` long or more."""
    tiles = batch * -(-m // tile) * -(-n // tile)
    parts = 1
    while tiles * parts < enough and parts < most and k % (parts * 2) == 0 and k // (parts * 2) >= 4 * tile:
        parts *= 2
    return parts


def split_k_te(parts: int, out_dtype: str):
    """TE: C[b * parts + p, m, n] = sum_j A[b, m, p * L + j] * B[b, p * L + j, n], L = K / parts. dlight's Matmul
    rule schedules it as a batched matmul: A's slices are read in place, no transposed copy."""
    from tvm import te

    def matmul(a, b):
        batch, m, k = (int(d) for d in a.shape)
        n, length = int(b.shape[2]), k // parts
        j = te.reduce_axis((0, length), name="j")
        dtype = str(out_dtype) or a.dtype
        return te.compute((batch * parts, m, n), lambda bp, i, c: te.sum(
            a[bp // parts, i, bp % parts * length + j].astype(dtype) * b[bp // parts, bp % parts * length + j, c]
            .astype(dtype), axis=j), name="matmul_split_k")

    return matmul


def sum_parts_te(parts: int, out_shape, part_index, name: str):
    """TE: the sum of a split-K kernel's ``parts`` partial results, out[idx] = sum over q of partial[part_index(q,
    idx)], written out as ``parts`` adds: an elementwise kernel that the ops after it (bias, cast) fuse into
    (dlight's Reduction rule fails on some of these shapes)."""
    from tvm import te

    def total(partial):
        def at(*idx):
            acc = partial[part_index(0, idx)]
            for q in range(1, parts):
                acc = acc + partial[part_index(q, idx)]
            return acc

        return te.compute(out_shape(partial), at, name=name)

    return total


def split_k_matmul():
    """A module pass: a 3-D ``matmul`` with a long reduction and a small output (sliced attention's probs @ V at
    SD v1.5 size: 4096 x 4096 @ 4096 x 40, 256 workgroups of dlight's 32x32 tiles on a GPU that holds thousands)
    becomes ``parts`` matmuls over slices of the reduction, batched into one kernel, and a sum."""
    def split(mutator, call):
        shapes = [static_shape(tvm_api.expr_type(x)) for x in call.args]
        if any(s is None or len(s) != 3 for s in shapes):
            return None
        (batch, m, k), (batch_b, k_b, n) = shapes
        parts = split_k(batch, m, n, k)
        if batch != batch_b or k != k_b or parts == 1:
            return None
        partial = mutator.builder_.emit_te(split_k_te(parts, call.attrs.out_dtype), *call.args,
                                           primfunc_name_hint="matmul_split_k")
        total = sum_parts_te(parts, lambda p: (batch, m, n), lambda q, idx: (idx[0] * parts + q, *idx[1:]),
                             "matmul_split_k_sum")
        return mutator.builder_.call_te(total, partial, primfunc_name_hint="matmul_split_k_sum")

    return passes.call_rewrite_pass("relax.matmul", split, "SplitKMatmul")


def conv_split_k_te(parts: int, strides, padding, out_dtype: str):
    """TE: an NCHW/OIHW convolution as ``parts`` partial convolutions over slices of the input channels, stacked
    on a leading axis: P[p, n, o, y, x] = sum over the slice's channels c and the window of pad(X)[n, c, ...] *
    W[o, c, ...]. dlight's Matmul rule schedules it as a batched implicit GEMM, reading the slices in place."""
    from tvm import te

    T = tvm_api.tir()
    (sh, sw), (top, left, bottom, right) = strides, padding

    def conv(x, w):
        n, c, h, wd = (int(d) for d in x.shape)
        o, _, kh, kw = (int(d) for d in w.shape)
        per = c // parts
        out_h, out_w = (h + top + bottom - kh) // sh + 1, (wd + left + right - kw) // sw + 1
        padded = te.compute((n, c, h + top + bottom, wd + left + right), lambda b, ch, y, xx: te.if_then_else(
            T.all(y >= top, y < h + top, xx >= left, xx < wd + left), x[b, ch, y - top, xx - left],
            T.const(0, x.dtype)), name="pad_temp")
        rc, ry, rx = te.reduce_axis((0, per), "rc"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
        dtype = str(out_dtype) or x.dtype
        return te.compute((parts, n, o, out_h, out_w), lambda p, b, f, y, xx: te.sum(
            padded[b, p * per + rc, y * sh + ry, xx * sw + rx].astype(dtype) * w[f, p * per + rc, ry, rx].astype(dtype),
            axis=[rc, ry, rx]), name="conv2d_split_k")

    return conv


def split_k_conv2d():
    """A module pass: a 2-D convolution whose implicit GEMM has a long reduction and few output tiles (SD v1.5's
    1280-channel convolutions at 8x8: 128 x 1280 outputs over 11520 products, 160 workgroups) becomes partial
    convolutions over slices of its input channels, batched into one kernel, and their sum."""
    def split(mutator, call):
        attrs = call.attrs
        shapes = [static_shape(tvm_api.expr_type(e)) for e in (*call.args, call)]
        if (any(s is None for s in shapes) or int(attrs.groups) != 1
                or [int(d) for d in attrs.dilation] != [1, 1]
                or (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW")):
            return None
        (n, c, _, _), (o, _, kh, kw), (_, _, out_h, out_w) = shapes
        parts = split_k(1, n * out_h * out_w, o, c * kh * kw)
        while parts > 1 and c % parts:
            parts //= 2
        if parts == 1:
            return None
        partial = mutator.builder_.emit_te(
            conv_split_k_te(parts, [int(d) for d in attrs.strides], [int(d) for d in attrs.padding],
                            attrs.out_dtype), *call.args, primfunc_name_hint="conv2d_split_k")
        total = sum_parts_te(parts, lambda p: [int(d) for d in p.shape[1:]], lambda q, idx: (q, *idx),
                             "conv2d_split_k_sum")
        return mutator.builder_.call_te(total, partial, primfunc_name_hint="conv2d_split_k_sum")

    return passes.call_rewrite_pass("relax.nn.conv2d", split, "SplitKConv2d")


def rewrites() -> list:
    """The module passes the WebGPU compile runs before legalization (pipeline.webgpu.build.pass_list)."""
    return [split_group_norm(), split_k_matmul(), split_k_conv2d()]


# dlight's Matmul rule tiles by target kind and gives "webgpu" its generic default. These are its knobs (see
# dlight.gpu.Matmul.Config); which one the compile uses is measured: benchmarks/results/webgpu-sd15-random-h200.md.
MATMUL_CONFIGS = {
    "dlight": None,  # TVM's own choice for webgpu: 8x8 threads, 4x4 per thread, k 8
    # dlight's CUDA tiling (8x16 threads, k 16) without its 2-wide vectors and storage alignment, which fail to
    # lower on some SD v1.5 shapes (an IndexMap coefficient check in TVM 0.26)
    "cuda": dict(block_size_x=8, block_size_y=16, micro_size_x=4, micro_size_y=4, micro_size_k=16, vector_size=1,
                 unroll=256, use_shared=True, storage_align=False, inner_x=False),
    "k16": dict(block_size_x=8, block_size_y=8, micro_size_x=4, micro_size_y=4, micro_size_k=16, vector_size=1,
                unroll=256, use_shared=True, storage_align=False, inner_x=False),
    "wide": dict(block_size_x=16, block_size_y=16, micro_size_x=4, micro_size_y=4, micro_size_k=16, vector_size=1,
                 unroll=256, use_shared=True, storage_align=False, inner_x=False),
}


def schedule_rules(matmul: str = "dlight") -> list:
    """The dlight rules the WebGPU compile applies: TVM's default list, with the Matmul rule (convolutions are
    scheduled by it too, as implicit GEMMs) tiled by ``MATMUL_CONFIGS[matmul]``."""
    dl = tvm_api.dlight()
    config = MATMUL_CONFIGS[matmul]

    class Matmul(dl.gpu.Matmul):
        def get_configs(self, target):
            return dl.gpu.Matmul.Config(**config) if config else super().get_configs(target)

    return [Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
