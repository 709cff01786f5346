"""Convolutions on subgroup matrices, as implicit GEMMs: ``Conv``, its twin and WGSL override, and the Relax rewrites of
``conv2d`` (and of ``astype(conv2d)``, the cast fused)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ...errors import WebsdError
from ...toolchain import tvm_api
from .. import passes
from .gemm import Gemm
from .profiles import MatrixProfile
from .wgsl import PROLOGUE, kernel, opaque, store_lines, tile_copies, twin_header, vectorized


@dataclass(frozen=True)
class Conv:
    """out[b, o, y, x] = sum over c, ky, kx of pad(X)[b, c, y * stride + ky, x * stride + kx] * W[o, c, ky, kx]: X
    float16 (batch, c, h, w), W float16 (o, c, kh, kw), out float32 (NCHW). As a GEMM per image: W (o, c*kh*kw)
    times the input's im2col (c*kh*kw, out_h*out_w), which the kernel gathers into workgroup memory a chunk at a
    time."""
    batch: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    # float16: the kernel also does the cast that follows the convolution (accumulating in float32 still), which
    # halves what it writes and keeps the result within the binding limit where float32 would not be
    out_dtype: str = "float32"
    # split-k: the input channels in this many parts, each a workgroup's, whose float32 partial sums (an output of
    # (splits, batch, o, out_h, out_w)) the rewrite adds up after the kernel: more workgroups for a convolution with
    # few pixels and a long reduction (SD's 8x8 ones: 64 pixels, 11520 deep)
    splits: int = 1

    @property
    def out_h(self) -> int:
        return (self.h + self.pad[0] + self.pad[2] - self.kh) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.w + self.pad[1] + self.pad[3] - self.kw) // self.stride + 1

    @property
    def gemm(self) -> Gemm:
        """The GEMM of one image: rows = output channels, columns = output pixels, reduction = c * kh * kw."""
        return Gemm(self.batch, self.o, self.out_h * self.out_w, self.c * self.kh * self.kw)

    @property
    def part(self) -> int:
        """The reduction of one split: (c / splits) * kh * kw."""
        return self.c // self.splits * self.kh * self.kw

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The kernel's output: the convolution's, or with splits its partial sums, split first."""
        shape = (self.batch, self.o, self.out_h, self.out_w)
        return shape if self.splits == 1 else (self.splits, *shape)

    @property
    def name(self) -> str:
        return (f"sgconv_{self.batch}x{self.c}x{self.h}x{self.w}_{self.o}x{self.kh}x{self.kw}_s{self.stride}"
                f"_p{'_'.join(map(str, self.pad))}{'_h' if self.out_dtype == 'float16' else ''}"
                f"{f'_k{self.splits}' if self.splits > 1 else ''}")


def conv_layout(conv: Conv, profile: MatrixProfile) -> tuple[tuple[int, int], int] | None:
    """(block, subgroups) of a convolution's kernel: up to ``profile.conv_subgroups`` subgroups (as many as the
    output channels divide into), each a block of up to 4 x ``profile.conv_cols`` result matrices; under
    ``profile.conv_workgroups`` workgroups the block loses rows first, then columns, never subgroups (the H100
    sweep's order: the subgroups sharing one gather are what pays most). None when the GEMM's sizes are not
    multiples of the matrix shape."""
    g, p = conv.gemm, profile
    if g.m % p.m or g.n % p.n or g.k % p.k:
        return None
    subgroups = max(s for s in (1, 2, 4, 8) if s <= p.conv_subgroups and g.m % (s * p.m) == 0)
    rows = max(r for r in (1, 2, 4) if g.m % (subgroups * r * p.m) == 0)
    cols = max(c for c in (1, 2, 4) if c <= p.conv_cols and g.n % (c * p.n) == 0)
    while rows * cols > 1 and g.batch * (g.m // (subgroups * rows * p.m)) * (g.n // (cols * p.n)) < (
            p.conv_workgroups or p.enough_workgroups):
        rows, cols = (rows // 2, cols) if rows > 1 else (rows, cols // 2)
    return (rows, cols), subgroups


def conv_splits(conv: Conv, profile: MatrixProfile) -> int:
    """How many parts a convolution's reduction splits into (``Conv.splits``): the fewest of 1, 2, 4, 8 that bring
    its grid (``conv_layout``'s) to the profile's ``conv_split_workgroups`` (0: never split), each part whole
    matrix depths of whole input channels."""
    layout = conv_layout(conv, profile)
    if not layout or not profile.conv_split_workgroups:
        return 1
    (rows, cols), subgroups = layout
    g, p = conv.gemm, profile
    workgroups = g.batch * (g.m // (subgroups * rows * p.m)) * (g.n // (cols * p.n))
    fits = [s for s in (1, 2, 4, 8) if conv.c % s == 0 and conv.c // s * conv.kh * conv.kw % p.k == 0]
    return next((s for s in fits if workgroups * s >= p.conv_split_workgroups), fits[-1])


def conv_staged(profile: MatrixProfile, block: tuple[int, int]) -> bool:
    """Whether the build stages a convolution's weights in this block (``profile.conv_staged_rows``)."""
    return profile.conv_staged and block[0] >= profile.conv_staged_rows


def conv_chunk(conv: Conv, profile: MatrixProfile, block: tuple[int, int], storage: int = 8192,
               weight_rows: int = 0) -> int:
    """How much of the reduction one workgroup-memory fill holds: the most of 4, 2, 1 matrix depths that divides
    it and keeps the float16 tile within ``storage`` bytes (half of WebGPU's default workgroup storage), with the
    ``weight_rows`` of a staged kernel's weight tile beside it."""
    cols = block[1] * profile.n
    return next(d * profile.k for d in (4, 2, 1)
                if conv.part % (d * profile.k) == 0 and d * profile.k * (cols + weight_rows) * 2 <= storage)


def conv_te(conv: Conv):
    """The convolution as TE: (X, W, C), zero padding inside the sum, float32 accumulation."""
    from tvm import te

    T = tvm_api.tir()
    top, left = conv.pad[0], conv.pad[1]
    x = te.placeholder((conv.batch, conv.c, conv.h, conv.w), "float16", name="X")
    w = te.placeholder((conv.o, conv.c, conv.kh, conv.kw), "float16", name="W")
    part = conv.c // conv.splits
    rc, ry, rx = (te.reduce_axis((0, e), n) for e, n in ((part, "rc"), (conv.kh, "ry"), (conv.kw, "rx")))

    def at(s, b, o, y, xx):  # split s's channels
        ch = s * part + rc
        iy, ix = y * conv.stride + ry - top, xx * conv.stride + rx - left
        inside = T.all(iy >= 0, iy < conv.h, ix >= 0, ix < conv.w)
        v = te.if_then_else(inside, x[b, ch, iy, ix], T.const(0, "float16"))
        return te.sum(v.astype("float32") * w[o, ch, ry, rx].astype("float32"), axis=[rc, ry, rx])

    shape = conv.out_shape
    if conv.splits > 1:
        return x, w, te.compute(shape, at, name="C")
    if conv.out_dtype == "float32":
        return x, w, te.compute(shape, lambda *i: at(0, *i), name="C")
    acc = te.compute(shape, lambda *i: at(0, *i), name="C_acc")
    return x, w, te.compute(shape, lambda *i: acc(*i).astype(conv.out_dtype), name="C")


def conv_twin(conv: Conv, profile: MatrixProfile, block: tuple[int, int], subgroups: int = 1):
    """The twin of a convolution kernel (module doc): plain TIR on the real kernel's grid and workgroup (``subgroups``
    subgroups, each a ``block``, stacked along the rows). Marked scheduled."""
    from tvm import te

    sch = tvm_api.schedule(te.create_prim_func(list(conv_te(conv))))
    rows, cols = block
    *images, o, y, xx = sch.get_loops(tvm_api.schedule_block(sch, "C"))[:len(conv.out_shape)]  # images: (split,) b
    pixels = sch.fuse(y, xx)
    o_out, o_in = sch.split(o, [None, subgroups * rows * profile.m])
    p_out, p_in = sch.split(pixels, [None, cols * profile.n])
    sch.reorder(*images, o_out, p_out, o_in, p_in)
    sch.bind(p_out, "blockIdx.x")
    sch.bind(sch.fuse(*images, o_out), "blockIdx.y")  # (split,) image, block of rows
    thread, each = sch.split(sch.fuse(o_in, p_in), [subgroups * profile.subgroup_size, None])
    sch.bind(thread, "threadIdx.x")
    if conv.out_dtype != "float32":  # the float32 sum of each output element, in a register, then the cast
        acc = tvm_api.schedule_block(sch, "C_acc")
        sch.compute_at(acc, each)
        sch.set_scope(acc, 0, "local")
    return opaque(tvm_api.mark_scheduled(sch.mod["main"]))


def conv_wgsl(conv: Conv, profile: MatrixProfile, block: tuple[int, int], twin_wgsl: str, subgroups: int = 1,
              staged: bool = False, prefetch: bool = False) -> str:
    """The WGSL override of a convolution's twin: per chunk of the reduction, the workgroup gathers that chunk of
    the im2col columns it needs into workgroup memory (zeros outside the padded input), then each of its
    ``subgroups`` subgroups multiplies its own weight rows by it: more subgroups share one gather. The weights are
    read straight from storage, or with ``staged`` copied into workgroup memory with vector loads, the next chunk's
    loading into registers while this one multiplies (as the staged matmul: gemm.py). With ``prefetch`` the gather
    too loads the next chunk into registers while this one multiplies, so its loads are in flight then rather than
    between two barriers."""
    header, entry, v = twin_header(twin_wgsl, ("X", "W", "C"))
    p, (rows, cols) = profile, block
    g = conv.gemm
    weight_rows = subgroups * rows * p.m
    staged_out = subgroups * p.m * p.n * 4 if conv.out_dtype != "float32" else 0
    chunk = (conv_chunk(conv, profile, block, (16 << 10) - staged_out, weight_rows) if staged
             else conv_chunk(conv, profile, block))
    w_regs, w_loads, w_stores = [], [], []
    if staged:
        header = vectorized(header, v["W"], entry)
        # the weight rows of all the subgroups, along the reduction
        w_regs, w_loads, w_stores = tile_copies("w", v["W"], weight_rows, chunk // 4, f"(block_row0 + r) * {g.k // 4}u "
                                                "+ ks / 4u", subgroups * p.subgroup_size)
    width = cols * p.n  # the columns (output pixels) of the block
    threads = subgroups * p.subgroup_size
    kk = conv.kh * conv.kw

    def gathered(e: str, k0: str, indent: str) -> list[str]:  # ``value``: im2col element e of the chunk at k0
        return [indent + line for line in [
            f"let k = {k0} + {e} / {width}u;",
            f"let col = col0 + {e} % {width}u;",
            f"let ch = k / {kk}u;",
            f"let ky = i32((k % {kk}u) / {conv.kw}u);",
            f"let kx = i32(k % {conv.kw}u);",
            f"let iy = i32(col / {conv.out_w}u) * {conv.stride} + ky - {conv.pad[0]};",
            f"let ix = i32(col % {conv.out_w}u) * {conv.stride} + kx - {conv.pad[1]};",
            "var value = f16(0.0);",
            f"if (iy >= 0 && iy < {conv.h} && ix >= 0 && ix < {conv.w}) {{",
            f"  value = {v['X']}[x0 + ch * {conv.h * conv.w}u + u32(iy) * {conv.w}u + u32(ix)];",
            "}"]]

    g_regs, g_loads, g_stores = [], [], []
    if prefetch:  # element lane + i * threads of each chunk in register g{i}
        count = chunk * width
        for i in range(-(-count // threads)):
            guard = f"if (lane + {i * threads}u < {count}u) " if (i + 1) * threads > count else ""
            g_regs.append(f"  var g{i} : f16;")
            g_loads.append(f"    {guard}{{")
            g_loads += [*gathered(f"(lane + {i * threads}u)", "ks", "      "), f"      g{i} = value;", "    }"]
            g_stores.append(f"    {guard}{{ im2col[lane + {i * threads}u] = g{i}; }}")
    left = f"subgroup_matrix_left<f16, {p.k}, {p.m}>"
    right = f"subgroup_matrix_right<f16, {p.n}, {p.k}>"
    result = f"subgroup_matrix_result<f32, {p.n}, {p.m}>"
    row_blocks = g.m // (subgroups * rows * p.m)
    accs = [(i, j) for i in range(rows) for j in range(cols)]
    own_rows = f" + sid * {rows * p.m}u" if subgroups > 1 else ""
    end = "k_end" if conv.splits > 1 else f"{g.k}u"  # this workgroup's reduction: [k_begin, end)
    lines = [
        *PROLOGUE,
        f"  let image = blockIdx.y / {row_blocks}u % {g.batch}u;",
        f"  let block_row0 = (blockIdx.y % {row_blocks}u) * {weight_rows}u;",
        f"  let row0 = block_row0{own_rows};",
        f"  let col0 = block_x * {width}u;",
        f"  let x0 = image * {conv.c * conv.h * conv.w}u;",
        *([f"  let split = blockIdx.y / {row_blocks * g.batch}u;",
           f"  let k_begin = split * {conv.part}u;",
           f"  let k_end = k_begin + {conv.part}u;",
           f"  let c0 = split * {g.batch * g.m * g.n}u;  // this split's partial sums"]
          if conv.splits > 1 else ["  let k_begin = 0u;"]),
        *(f"  var acc_{i}_{j} = {result}();" for i, j in accs),
        *w_regs,
        *g_regs,
        *(["  {  // the first chunk's weights (and gather) into registers", "    let ks = k_begin;", *w_loads,
           *g_loads, "  }"] if staged or prefetch else []),
        f"  for (var k0 = k_begin; k0 < {end}; k0 += {chunk}u) {{",
        "    workgroupBarrier();  // the last chunk's multiplies are done with the tile",
        *w_stores,
        *(g_stores if prefetch else [
            f"    for (var e = lane; e < {chunk * width}u; e += {threads}u) {{",
            *gathered("e", "k0", "      "),
            "      im2col[e] = value;",
            "    }"]),
        "    workgroupBarrier();",
        *([f"    if (k0 + {chunk}u < {end}) {{  // the next chunk's weights (and gather) into registers",
           f"      let ks = k0 + {chunk}u;", *("  " + line for line in w_loads + g_loads), "    }"]
          if staged or prefetch else []),
        f"    for (var kc = 0u; kc < {chunk}u; kc += {p.k}u) {{",
        *((f"      let l{i} = subgroupMatrixLoad<{left}, row_major>(&w_tile, (row0 - block_row0 + {i * p.m}u) * "
           f"{chunk}u + kc, {chunk}u);") if staged else
          (f"      let l{i} = subgroupMatrixLoad<{left}, row_major>(&{v['W']}, (row0 + {i * p.m}u) * {g.k}u + k0 + kc, "
           f"{g.k}u);") for i in range(rows)),
        *(f"      let r{j} = subgroupMatrixLoad<{right}, row_major>(&im2col, kc * {width}u + {j * p.n}u, {width}u);"
          for j in range(cols)),
        *(f"      acc_{i}_{j} = subgroupMatrixMultiplyAccumulate(l{i}, r{j}, acc_{i}_{j});" for i, j in accs),
        "    }",
        "  }",
    ]
    own_staged = ("sg_lane", f"sid * {p.m * p.n}u") if subgroups > 1 else ()  # each subgroup's lanes and matrix
    for i, j in accs:
        lines += store_lines(f"acc_{i}_{j}", conv.out_dtype, v["C"],
                             f"{'c0 + ' if conv.splits > 1 else ''}image * {g.m * g.n}u + (row0 + {i * p.m}u) * "
                             f"{g.n}u + col0 + {j * p.n}u", g.n, p, *own_staged)
    workgroup = (f"var<workgroup> im2col : array<f16, {chunk * width}>;\n"
                 + (f"var<workgroup> staged : array<f32, {staged_out // 4}>;\n" if staged_out else "")
                 + (f"var<workgroup> w_tile : array<f16, {weight_rows * chunk}>;\n" if staged else ""))
    return kernel(header, entry, p, lines, workgroup, subgroups)


def override(conv: Conv, profile: MatrixProfile, twin_wgsl: str) -> str:
    """The WGSL override of a built convolution twin, in the layout the rewrite built the twin with."""
    block, subgroups = conv_layout(conv, profile)
    return conv_wgsl(conv, profile, block, twin_wgsl, subgroups, conv_staged(profile, block), profile.conv_prefetch)


def conv_of(call) -> Conv | None:
    """The Conv a Relax ``nn.conv2d`` call is, when it is one these kernels take: float16 operands, a float32
    result, static shapes, NCHW/OIHW, no groups or dilation, one stride both ways."""
    from ..kernels import static_shape

    attrs = call.attrs
    x_ty, w_ty = (tvm_api.expr_type(e) for e in call.args)
    x, w = static_shape(x_ty), static_shape(w_ty)
    strides = [int(d) for d in attrs.strides]
    if (x is None or w is None or int(attrs.groups) != 1 or [int(d) for d in attrs.dilation] != [1, 1]
            or (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW")
            or strides[0] != strides[1] or str(x_ty.dtype) != "float16" or str(w_ty.dtype) != "float16"
            or str(tvm_api.expr_type(call).dtype) != "float32"):
        return None
    return Conv(x[0], x[1], x[2], x[3], w[0], w[2], w[3], strides[0], tuple(int(d) for d in attrs.padding))


def _twin_call(mutator, twins: dict, conv: Conv, profile: MatrixProfile, args: list, dtype: str):
    """The call of ``conv``'s twin (added to the module once), its partial sums added up where it splits (slices
    and adds, which fuse with what follows into one elementwise kernel: a ``sum`` over the splits, fused with a cast
    and a bias add, is a reduction that TVM 0.26's dlight rules fail to schedule), as ``dtype``."""
    from tvm import relax

    bb = mutator.builder_
    if conv.name not in twins:
        twins[conv.name] = bb.add_func(conv_twin(conv, profile, *conv_layout(conv, profile))
                                       .with_attr("global_symbol", conv.name), conv.name)
    out = relax.call_tir(twins[conv.name], args, tvm_api.tensor_type(conv.out_shape, conv.out_dtype))
    if conv.splits > 1:
        out = bb.emit(out)
        parts = [relax.op.squeeze(bb.emit(relax.op.strided_slice(out, axes=[0], begin=[i], end=[i + 1])), axis=[0])
                 for i in range(conv.splits)]
        out = parts[0]
        for part in parts[1:]:
            out = relax.op.add(bb.emit(out), bb.emit(part))
    return out if dtype == conv.out_dtype else relax.op.astype(bb.emit(out), dtype)


def _fits(conv: Conv, max_binding: int) -> bool:
    """Whether the twin's output is within the binding limit."""
    return conv.splits * conv.gemm.batch * conv.gemm.m * conv.gemm.n * (2 if conv.out_dtype == "float16" else 4) <= (
        max_binding)


def rewrite_cast_convs(profile: MatrixProfile, max_binding: int = 1 << 62):
    """A module pass: ``astype(conv2d(x, w), "float16")`` of a convolution ``conv_of`` accepts becomes one call of a
    twin with a float16 output (``Conv.out_dtype``), or where it splits (``conv_splits``) of one with float32
    partial sums, added up and cast after it; the float32 convolution it read is left dead. Run before
    ``rewrite_convs`` (which takes the convolutions with no cast after them), with dead code eliminated between."""
    import tvm
    from tvm import relax

    conv2d = tvm.ir.Op.get("relax.nn.conv2d")
    twins = {}

    def rewrite(mutator, call):
        if str(call.attrs.dtype) != "float16" or not isinstance(call.args[0], relax.Var):
            return None
        bound = mutator.lookup_binding(call.args[0])
        if not isinstance(bound, relax.Call) or not bound.op.same_as(conv2d):
            return None
        conv = conv_of(bound)
        if not conv or not conv_layout(conv, profile):
            return None
        splits = conv_splits(conv, profile)
        conv = dataclasses.replace(conv, out_dtype="float16" if splits == 1 else "float32", splits=splits)
        if not _fits(conv, max_binding):
            return None
        return _twin_call(mutator, twins, conv, profile, list(bound.args), "float16")

    return passes.call_rewrite_pass("relax.astype", rewrite, "SubgroupMatrixConv2dCast")


def rewrite_convs(profile: MatrixProfile, max_binding: int = 1 << 62):
    """A module pass: each convolution ``conv_of`` accepts, and whose GEMM fits the profile, becomes a call of its
    twin PrimFunc (one per distinct Conv; with its partial sums added up after it where it splits). Run before
    legalization. A convolution whose float32 result would be over ``max_binding`` bytes stays TVM's, which fuses
    the cast to float16 into it (the SD VAE's 256-channel 512x512 convolutions: 256 MiB in float32, 128 MiB in
    float16)."""
    twins = {}

    def rewrite(mutator, call):
        conv = conv_of(call)
        if not conv or not conv_layout(conv, profile):
            return None
        conv = dataclasses.replace(conv, splits=conv_splits(conv, profile))
        if not _fits(conv, max_binding):
            return None
        return _twin_call(mutator, twins, conv, profile, list(call.args), "float32")

    return passes.call_rewrite_pass("relax.nn.conv2d", rewrite, "SubgroupMatrixConv2d")


def parse_conv_name(name: str) -> Conv:
    """Conv.name back to the Conv."""
    found = re.fullmatch(r"sgconv_(\d+)x(\d+)x(\d+)x(\d+)_(\d+)x(\d+)x(\d+)_s(\d+)_p(\d+)_(\d+)_(\d+)_(\d+)(_h)?"
                         r"(?:_k(\d+))?", name)
    if not found:
        raise WebsdError(f"subgroup-matrix: {name} is not a convolution twin's name")
    v = [int(x) for x in found.groups()[:12]]
    return Conv(*v[:8], pad=tuple(v[8:]), out_dtype="float16" if found.group(13) else "float32",
                splits=int(found.group(14) or 1))
