"""Matmuls on WebGPU's subgroup matrices (Dawn's ``chromium-experimental-subgroup-matrix``: NVIDIA's tensor cores
through Vulkan cooperative matrices, Apple's simdgroup matrices), for the ``subgroup-matrix`` variant of a site.

TVM cannot emit these WGSL builtins, so each such kernel comes in two halves that share one name and one launch:

  * a **twin** PrimFunc (``gemm_twin``): the same matmul written as plain TIR with the grid and workgroup of the
    real kernel. TVM compiles and launches it like any kernel, so the .wasm holds its bindings, uniform and grid,
    and the llvm build that ``verify_*`` runs computes the same result on the CPU;
  * its **WGSL override** (``gemm_wgsl``): the real kernel, written here around TVM's own header for the twin (its
    bindings and uniform, copied verbatim), that the page swaps in for the twin's shader when the adapter offers the
    feature (manifest ``variants[].submodels[*].kernels``).

One subgroup per workgroup computes a (rows x m) by (cols x n) block of the output with rows x cols accumulators,
reading A and B straight from storage with ``subgroupMatrixLoad`` (float16 in, float32 accumulation). The shapes
(m, n, k) and the subgroup size are an adapter class's (``PROFILES``): a kernel built for one does not run on
another, which is why the manifest lists the config a variant needs.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from math import prod

from ..errors import WebsdError
from ..toolchain import tvm_api
from . import passes

FEATURE = "chromium-experimental-subgroup-matrix"


@dataclass(frozen=True)
class MatrixProfile:
    """What an adapter class offers: one ``adapter.info.subgroupMatrixConfigs`` entry and its subgroup size."""
    component: str  # "f16": the A and B elements
    result: str  # "f32": the accumulator
    m: int
    n: int
    k: int
    subgroup_size: int
    # blocks shrink (halving the longer side) until the grid has this many workgroups (one subgroup each): a big
    # block reuses each load more, a small one fills more of the GPU (1: never shrink)
    enough_workgroups: int = 1

    def requires(self) -> dict:
        """The manifest's ``requires`` of a variant built for this profile."""
        return {"features": [FEATURE, "shader-f16"], "subgroup_size": self.subgroup_size,
                "subgroup_matrix_configs": [{"componentType": self.component, "resultComponentType": self.result,
                                             "M": self.m, "N": self.n, "K": self.k}]}


# Measured: the H200 (driver 580.159.04, npm webgpu 0.6.2, toggle allow_unsafe_apis) lists f16 x f16 -> f32 at
# 16x16x16 among its configs, subgroup size 32; lavapipe from Mesa 26 (setup.sh's .venv/lavapipe-sm) lists only
# 8x8x8, subgroup size 8, which is what CI checks the kernels' arithmetic with.
PROFILES = {
    # 132 SMs of up to 64 warps each: 1024 one-warp workgroups is ~8 per SM (a guess until the H200 measures it)
    "nvidia": MatrixProfile("f16", "f32", 16, 16, 16, 32, enough_workgroups=1024),
    "lavapipe": MatrixProfile("f16", "f32", 8, 8, 8, 8),
}


@dataclass(frozen=True)
class Gemm:
    """C[b, i, j] = sum_k A[b, i, k] * B[(b), k, j]: A float16 (batch, m, k) row-major; B float16 (k, n) or, with
    ``b_transposed``, (n, k); ``b_batched``: B has the batch axis too. C float32 (batch, m, n)."""
    batch: int
    m: int
    n: int
    k: int
    b_batched: bool = False
    b_transposed: bool = False

    @property
    def name(self) -> str:
        flags = ("b" if self.b_batched else "") + ("t" if self.b_transposed else "")
        return f"sgmm_{self.batch}x{self.m}x{self.n}x{self.k}{'_' + flags if flags else ''}"


def block_of(gemm: Gemm, profile: MatrixProfile, most: int = 4) -> tuple[int, int] | None:
    """How many result matrices (rows, cols) one subgroup computes: the largest up to ``most`` each way that divide
    the output, or None when the matmul's sizes are not multiples of the profile's matrix shape."""
    p = profile
    if gemm.m % p.m or gemm.n % p.n or gemm.k % p.k:
        return None
    rows = max(r for r in (1, 2, 4, 8) if r <= most and gemm.m % (r * p.m) == 0)
    cols = max(c for c in (1, 2, 4, 8) if c <= most and gemm.n % (c * p.n) == 0)
    while rows * cols > 1 and prod(grid(gemm, p, (rows, cols))) < p.enough_workgroups:
        rows, cols = (rows // 2, cols) if rows >= cols else (rows, cols // 2)
    return rows, cols


def grid(gemm: Gemm, profile: MatrixProfile, block: tuple[int, int]) -> tuple[int, int]:
    """(x, y) workgroups: x over column blocks, y over batch x row blocks."""
    rows, cols = block
    return gemm.n // (cols * profile.n), gemm.batch * gemm.m // (rows * profile.m)


def gemm_te(gemm: Gemm):
    """The matmul as TE: (A, B, C), float32 accumulation."""
    from tvm import te

    a_shape = (gemm.batch, gemm.m, gemm.k)
    b_shape = ((gemm.batch,) if gemm.b_batched else ()) + ((gemm.n, gemm.k) if gemm.b_transposed else (gemm.k, gemm.n))
    a = te.placeholder(a_shape, "float16", name="A")
    b = te.placeholder(b_shape, "float16", name="B")
    r = te.reduce_axis((0, gemm.k), "r")

    def b_at(batch, row, col):
        idx = (col, row) if gemm.b_transposed else (row, col)
        return b[((batch,) if gemm.b_batched else ()) + idx]

    return a, b, te.compute((gemm.batch, gemm.m, gemm.n), lambda bi, i, j: te.sum(
        a[bi, i, r].astype("float32") * b_at(bi, r, j).astype("float32"), axis=r), name="C")


def gemm_twin(gemm: Gemm, profile: MatrixProfile, block: tuple[int, int]):
    """The twin PrimFunc (module doc): the matmul in plain TIR, launched on the real kernel's grid with one
    subgroup's worth of threads, each thread summing some of the block's outputs. Marked scheduled."""
    from tvm import te

    sch = tvm_api.schedule(te.create_prim_func(list(gemm_te(gemm))))
    rows, cols = block
    bi, i, j, k = sch.get_loops(tvm_api.schedule_block(sch, "C"))
    i_out, i_in = sch.split(i, [None, rows * profile.m])
    j_out, j_in = sch.split(j, [None, cols * profile.n])
    sch.reorder(bi, i_out, j_out, i_in, j_in, k)
    sch.bind(j_out, "blockIdx.x")
    sch.bind(sch.fuse(bi, i_out), "blockIdx.y")
    thread, _ = sch.split(sch.fuse(i_in, j_in), [profile.subgroup_size, None])
    sch.bind(thread, "threadIdx.x")
    return _opaque(tvm_api.mark_scheduled(sch.mod["main"]))


def _opaque(func):
    """A twin that FuseOps leaves alone: its override computes exactly the twin's output, so nothing may be fused
    into it (relax.transform.AnnotateTIROpPattern keeps a pattern that is already set; 8 = kOpaque)."""
    return func.with_attr("op_pattern", 8)


_ENTRY = re.compile(r"@compute\s+@workgroup_size\([^)]*\)\s*fn\s+(\w+)\s*\(")
_BINDING = re.compile(r"@binding\((\d+)\)\s+var<storage[^>]*>\s+(\w+)\s*:")


def twin_header(wgsl: str, buffers=("A", "B", "C")) -> tuple[str, str, dict[str, str]]:
    """TVM's WGSL of a twin kernel -> (everything before its entry point: enables, bindings, uniform; the entry
    point's name; {buffer name (A/B/C): its WGSL variable})."""
    found = _ENTRY.search(wgsl)
    if not found:
        raise WebsdError("subgroup-matrix: TVM's WGSL for a twin kernel has no @compute entry point; the WGSL "
                         "codegen changed, so pipeline/webgpu/subgroup_matrix.py needs updating")
    header = wgsl[:found.start()]
    names = {}
    for _, var in _BINDING.findall(header):
        if var.removesuffix("_ptr") in buffers:
            names[var.removesuffix("_ptr")] = var
    if set(names) != set(buffers):
        raise WebsdError(f"subgroup-matrix: twin kernel {found.group(1)} binds {sorted(names)}, expected "
                         f"{', '.join(buffers)}")
    return header, found.group(1), names


def gemm_wgsl(gemm: Gemm, profile: MatrixProfile, block: tuple[int, int], twin_wgsl: str) -> str:
    """The WGSL override of a twin kernel (module doc): TVM's header, then the subgroup-matrix kernel."""
    header, entry, v = twin_header(twin_wgsl)
    p, (rows, cols) = profile, block
    m, n, k = gemm.m, gemm.n, gemm.k
    left = f"subgroup_matrix_left<f16, {p.k}, {p.m}>"
    right = f"subgroup_matrix_right<f16, {p.n}, {p.k}>"
    result = f"subgroup_matrix_result<f32, {p.n}, {p.m}>"
    row_blocks = m // (rows * p.m)
    b_batch = f"batch * {k * n}u" if gemm.b_batched else "0u"
    accs = [(i, j) for i in range(rows) for j in range(cols)]
    lines = [
        "  // tvmjs packs a long grid x into (x, z): the same linear block index as TVM's twin",
        "  let block_x = blockIdx.z * gridDim.x + blockIdx.x;",
        "  if (block_x > podArgs.packGridDimX) { return; }",
        f"  let batch = blockIdx.y / {row_blocks}u;",
        f"  let row0 = (blockIdx.y % {row_blocks}u) * {rows * p.m}u;",
        f"  let col0 = block_x * {cols * p.n}u;",
        f"  let a0 = batch * {m * k}u + row0 * {k}u;",
        f"  let b0 = {b_batch};",
        *(f"  var acc_{i}_{j} = {result}();" for i, j in accs),
        f"  for (var k0 = 0u; k0 < {k}u; k0 += {p.k}u) {{",
        *(f"    let l{i} = subgroupMatrixLoad<{left}, row_major>(&{v['A']}, a0 + {i * p.m * k}u + k0, {k}u);"
          for i in range(rows)),
    ]
    for j in range(cols):
        if gemm.b_transposed:  # B is (n, k): the right matrix read column-major, stride k
            lines.append(f"    let r{j} = subgroupMatrixLoad<{right}, col_major>(&{v['B']}, "
                         f"b0 + (col0 + {j * p.n}u) * {k}u + k0, {k}u);")
        else:
            lines.append(f"    let r{j} = subgroupMatrixLoad<{right}, row_major>(&{v['B']}, "
                         f"b0 + k0 * {n}u + col0 + {j * p.n}u, {n}u);")
    lines += [f"    acc_{i}_{j} = subgroupMatrixMultiplyAccumulate(l{i}, r{j}, acc_{i}_{j});" for i, j in accs]
    lines.append("  }")
    lines += [f"  subgroupMatrixStore<row_major>(&{v['C']}, batch * {m * n}u + (row0 + {i * p.m}u) * {n}u + col0 + "
              f"{j * p.n}u, acc_{i}_{j}, {n}u);" for i, j in accs]
    enables = "enable chromium_experimental_subgroup_matrix;\n"
    if "enable f16;" not in header:
        enables = "enable f16;\n" + enables
    return (enables + header + f"@compute @workgroup_size({p.subgroup_size}, 1, 1)\n"
            f"fn {entry}(\n  @builtin(workgroup_id) blockIdx : vec3<u32>,\n"
            f"  @builtin(num_workgroups) gridDim : vec3<u32>\n) {{\n" + "\n".join(lines) + "\n}\n")


@dataclass(frozen=True)
class Conv:
    """out[b, o, y, x] = sum over c, ky, kx of pad(X)[b, c, y * stride + ky, x * stride + kx] * W[o, c, ky, kx]: X float16
    (batch, c, h, w), W float16 (o, c, kh, kw), out float32 (NCHW). As a GEMM per image: W (o, c*kh*kw) times the
    input's im2col (c*kh*kw, out_h*out_w), which the kernel gathers into workgroup memory a chunk at a time."""
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
    def name(self) -> str:
        return (f"sgconv_{self.batch}x{self.c}x{self.h}x{self.w}_{self.o}x{self.kh}x{self.kw}_s{self.stride}"
                f"_p{'_'.join(map(str, self.pad))}{'_h' if self.out_dtype == 'float16' else ''}")


def conv_chunk(conv: Conv, profile: MatrixProfile, block: tuple[int, int], storage: int = 8192) -> int:
    """How much of the reduction one workgroup-memory fill holds: the most of 4, 2, 1 matrix depths that divides
    it and keeps the float16 tile within ``storage`` bytes (half of WebGPU's default workgroup storage)."""
    cols = block[1] * profile.n
    return next(d * profile.k for d in (4, 2, 1)
                if conv.gemm.k % (d * profile.k) == 0 and d * profile.k * cols * 2 <= storage)


def conv_te(conv: Conv):
    """The convolution as TE: (X, W, C), zero padding inside the sum, float32 accumulation."""
    from tvm import te

    T = tvm_api.tir()
    top, left = conv.pad[0], conv.pad[1]
    x = te.placeholder((conv.batch, conv.c, conv.h, conv.w), "float16", name="X")
    w = te.placeholder((conv.o, conv.c, conv.kh, conv.kw), "float16", name="W")
    rc, ry, rx = (te.reduce_axis((0, e), n) for e, n in ((conv.c, "rc"), (conv.kh, "ry"), (conv.kw, "rx")))

    def at(b, o, y, xx):
        iy, ix = y * conv.stride + ry - top, xx * conv.stride + rx - left
        inside = T.all(iy >= 0, iy < conv.h, ix >= 0, ix < conv.w)
        v = te.if_then_else(inside, x[b, rc, iy, ix], T.const(0, "float16"))
        return te.sum(v.astype("float32") * w[o, rc, ry, rx].astype("float32"), axis=[rc, ry, rx])

    shape = (conv.batch, conv.o, conv.out_h, conv.out_w)
    if conv.out_dtype == "float32":
        return x, w, te.compute(shape, at, name="C")
    acc = te.compute(shape, at, name="C_acc")
    return x, w, te.compute(shape, lambda *i: acc(*i).astype(conv.out_dtype), name="C")


def conv_twin(conv: Conv, profile: MatrixProfile, block: tuple[int, int]):
    """The twin of a convolution kernel (module doc): plain TIR on the real kernel's grid. Marked scheduled."""
    from tvm import te

    sch = tvm_api.schedule(te.create_prim_func(list(conv_te(conv))))
    rows, cols = block
    b, o, y, xx, *_ = sch.get_loops(tvm_api.schedule_block(sch, "C"))
    pixels = sch.fuse(y, xx)
    o_out, o_in = sch.split(o, [None, rows * profile.m])
    p_out, p_in = sch.split(pixels, [None, cols * profile.n])
    sch.reorder(b, o_out, p_out, o_in, p_in)
    sch.bind(p_out, "blockIdx.x")
    sch.bind(sch.fuse(b, o_out), "blockIdx.y")
    thread, each = sch.split(sch.fuse(o_in, p_in), [profile.subgroup_size, None])
    sch.bind(thread, "threadIdx.x")
    if conv.out_dtype != "float32":  # the float32 sum of each output element, in a register, then the cast
        acc = tvm_api.schedule_block(sch, "C_acc")
        sch.compute_at(acc, each)
        sch.set_scope(acc, 0, "local")
    return _opaque(tvm_api.mark_scheduled(sch.mod["main"]))


def _store_lines(acc: str, dtype: str, out: str, offset: str, stride: int, profile: MatrixProfile) -> list[str]:
    """WGSL that writes one float32 result matrix: straight to storage, or for a float16 output through the
    workgroup's ``staged`` (one matrix of float32), each lane converting some of its elements."""
    if dtype == "float32":
        return [f"  subgroupMatrixStore<row_major>(&{out}, {offset}, {acc}, {stride}u);"]
    p = profile
    return [f"  subgroupMatrixStore<row_major>(&staged, 0u, {acc}, {p.n}u);",
            "  workgroupBarrier();",
            f"  for (var e = lane; e < {p.m * p.n}u; e += {p.subgroup_size}u) {{",
            f"    {out}[{offset} + e / {p.n}u * {stride}u + e % {p.n}u] = f16(staged[e]);",
            "  }",
            "  workgroupBarrier();"]


def conv_wgsl(conv: Conv, profile: MatrixProfile, block: tuple[int, int], twin_wgsl: str) -> str:
    """The WGSL override of a convolution's twin: per chunk of the reduction, the subgroup gathers that chunk of
    the im2col columns it needs into workgroup memory (zeros outside the padded input), then multiplies the weight
    rows (read straight from storage) by it."""
    header, entry, v = twin_header(twin_wgsl, ("X", "W", "C"))
    p, (rows, cols) = profile, block
    g = conv.gemm
    chunk = conv_chunk(conv, profile, block)
    width = cols * p.n  # the columns (output pixels) of the block
    left = f"subgroup_matrix_left<f16, {p.k}, {p.m}>"
    right = f"subgroup_matrix_right<f16, {p.n}, {p.k}>"
    result = f"subgroup_matrix_result<f32, {p.n}, {p.m}>"
    row_blocks = g.m // (rows * p.m)
    accs = [(i, j) for i in range(rows) for j in range(cols)]
    kk = conv.kh * conv.kw
    lines = [
        "  let block_x = blockIdx.z * gridDim.x + blockIdx.x;",
        "  if (block_x > podArgs.packGridDimX) { return; }",
        f"  let image = blockIdx.y / {row_blocks}u;",
        f"  let row0 = (blockIdx.y % {row_blocks}u) * {rows * p.m}u;",
        f"  let col0 = block_x * {width}u;",
        f"  let x0 = image * {conv.c * conv.h * conv.w}u;",
        *(f"  var acc_{i}_{j} = {result}();" for i, j in accs),
        f"  for (var k0 = 0u; k0 < {g.k}u; k0 += {chunk}u) {{",
        "    workgroupBarrier();  // the last chunk's multiplies are done with the tile",
        f"    for (var e = lane; e < {chunk * width}u; e += {p.subgroup_size}u) {{",
        f"      let k = k0 + e / {width}u;",
        f"      let col = col0 + e % {width}u;",
        f"      let ch = k / {kk}u;",
        f"      let ky = i32((k % {kk}u) / {conv.kw}u);",
        f"      let kx = i32(k % {conv.kw}u);",
        f"      let iy = i32(col / {conv.out_w}u) * {conv.stride} + ky - {conv.pad[0]};",
        f"      let ix = i32(col % {conv.out_w}u) * {conv.stride} + kx - {conv.pad[1]};",
        "      var value = f16(0.0);",
        f"      if (iy >= 0 && iy < {conv.h} && ix >= 0 && ix < {conv.w}) {{",
        f"        value = {v['X']}[x0 + ch * {conv.h * conv.w}u + u32(iy) * {conv.w}u + u32(ix)];",
        "      }",
        "      im2col[e] = value;",
        "    }",
        "    workgroupBarrier();",
        f"    for (var kc = 0u; kc < {chunk}u; kc += {p.k}u) {{",
        *(f"      let l{i} = subgroupMatrixLoad<{left}, row_major>(&{v['W']}, (row0 + {i * p.m}u) * {g.k}u + k0 + kc, "
          f"{g.k}u);" for i in range(rows)),
        *(f"      let r{j} = subgroupMatrixLoad<{right}, row_major>(&im2col, kc * {width}u + {j * p.n}u, {width}u);"
          for j in range(cols)),
        *(f"      acc_{i}_{j} = subgroupMatrixMultiplyAccumulate(l{i}, r{j}, acc_{i}_{j});" for i, j in accs),
        "    }",
        "  }",
    ]
    for i, j in accs:
        lines += _store_lines(f"acc_{i}_{j}", conv.out_dtype, v["C"],
                              f"image * {g.m * g.n}u + (row0 + {i * p.m}u) * {g.n}u + col0 + {j * p.n}u", g.n, p)
    enables = "enable chromium_experimental_subgroup_matrix;\n"
    if "enable f16;" not in header:
        enables = "enable f16;\n" + enables
    staged = f"var<workgroup> staged : array<f32, {p.m * p.n}>;\n" if conv.out_dtype != "float32" else ""
    return (enables + header + f"var<workgroup> im2col : array<f16, {chunk * width}>;\n{staged}\n"
            f"@compute @workgroup_size({p.subgroup_size}, 1, 1)\n"
            f"fn {entry}(\n  @builtin(workgroup_id) blockIdx : vec3<u32>,\n"
            f"  @builtin(num_workgroups) gridDim : vec3<u32>,\n"
            f"  @builtin(local_invocation_index) lane : u32\n) {{\n" + "\n".join(lines) + "\n}\n")


def split_kernels(wgsl: str) -> dict[str, str]:
    """TVM's concatenated WGSL (inspection.webgpu_source) -> {entry point: that kernel's whole source}."""
    parts = re.split(r"^//-+\n", wgsl, flags=re.M)
    kernels = {}
    for part in parts:
        found = _ENTRY.search(part)
        if found:
            kernels[found.group(1)] = part[part.find("enable") if "enable" in part else 0:]
    return kernels


def matmul_gemm(call) -> Gemm | None:
    """The Gemm a Relax ``matmul`` call is, when it is one these kernels take: float16 operands, a float32 result,
    static shapes, A (batch..., m, k) and B (k, n) or (batch..., k, n) with the same batch."""
    from .kernels import static_shape

    a_ty, b_ty = (tvm_api.expr_type(x) for x in call.args)
    a, b = static_shape(a_ty), static_shape(b_ty)
    out = static_shape(tvm_api.expr_type(call))
    if a is None or b is None or out is None or len(a) < 2 or len(b) < 2:
        return None
    if str(a_ty.dtype) != "float16" or str(b_ty.dtype) != "float16" or str(tvm_api.expr_type(call).dtype) != "float32":
        return None
    *batch_a, m, k = a
    *batch_b, k_b, n = b
    if k != k_b or (batch_b and batch_b != batch_a):
        return None
    batch = 1
    for d in batch_a:
        batch *= d
    if not batch_b:  # one B for every batch: the batch folds into the rows, for bigger blocks
        return Gemm(1, batch * m, n, k)
    return Gemm(batch, m, n, k, b_batched=True)


def transposed_weight(mutator, b):
    """``w`` when the matmul's B is bound to ``permute_dims(w)`` of a 2-D ``w`` (how a Linear layer imports), else
    None."""
    import tvm
    from tvm import relax

    bound = mutator.lookup_binding(b) if isinstance(b, relax.Var) else None
    if not isinstance(bound, relax.Call) or not bound.op.same_as(tvm.ir.Op.get("relax.permute_dims")):
        return None
    w = bound.args[0]
    axes = bound.attrs.axes
    shape = tvm_api.expr_type(w).shape
    if shape is None or len(shape) != 2 or (axes is not None and [int(x) for x in axes] != [1, 0]):
        return None
    return w


def rewrite_matmuls(profile: MatrixProfile, max_binding: int = 1 << 62):
    """A module pass: each matmul ``matmul_gemm`` accepts, and whose sizes fit the profile, becomes a call of its
    twin PrimFunc (one per distinct Gemm), reshaped back to the matmul's output shape. Run before legalization.
    A matmul whose float32 result would be over ``max_binding`` bytes stays TVM's (which fuses the cast after it)."""
    from tvm import relax

    twins = {}

    def rewrite(mutator, call):
        gemm = matmul_gemm(call)
        block = gemm and block_of(gemm, profile)
        if not block or gemm.batch * gemm.m * gemm.n * 4 > max_binding:
            return None
        a, b = call.args
        weight = transposed_weight(mutator, b)
        if weight is not None:  # x @ permute_dims(w) (a Linear): read w (n, k) in place, no transpose kernel
            b, gemm = weight, Gemm(gemm.batch, gemm.m, gemm.n, gemm.k, b_transposed=True)
        bb = mutator.builder_
        if gemm.name not in twins:
            twins[gemm.name] = bb.add_func(gemm_twin(gemm, profile, block).with_attr("global_symbol", gemm.name),
                                           gemm.name)
        a3 = bb.emit(relax.op.reshape(a, (gemm.batch, gemm.m, gemm.k)))
        if gemm.b_batched:
            b = bb.emit(relax.op.reshape(b, (gemm.batch, gemm.k, gemm.n)))
        out = bb.emit(relax.call_tir(twins[gemm.name], [a3, b],
                                     tvm_api.tensor_type((gemm.batch, gemm.m, gemm.n), "float32")))
        return relax.op.reshape(out, tvm_api.expr_type(call).shape)

    return passes.call_rewrite_pass("relax.matmul", rewrite, "SubgroupMatrixMatmul")


def conv_of(call) -> Conv | None:
    """The Conv a Relax ``nn.conv2d`` call is, when it is one these kernels take: float16 operands, a float32
    result, static shapes, NCHW/OIHW, no groups or dilation, one stride both ways."""
    from .kernels import static_shape

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


def rewrite_cast_convs(profile: MatrixProfile, max_binding: int = 1 << 62):
    """A module pass: ``astype(conv2d(x, w), "float16")`` of a convolution ``conv_of`` accepts becomes one call of a
    twin with a float16 output (``Conv.out_dtype``); the float32 convolution it read is left dead. Run before
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
        block = conv and block_of(conv.gemm, profile)
        if not block or conv.gemm.batch * conv.gemm.m * conv.gemm.n * 2 > max_binding:
            return None
        conv = dataclasses.replace(conv, out_dtype="float16")
        if conv.name not in twins:
            twins[conv.name] = mutator.builder_.add_func(
                conv_twin(conv, profile, block).with_attr("global_symbol", conv.name), conv.name)
        return relax.call_tir(twins[conv.name], list(bound.args), tvm_api.expr_type(call))

    return passes.call_rewrite_pass("relax.astype", rewrite, "SubgroupMatrixConv2dCast")


def rewrite_convs(profile: MatrixProfile, max_binding: int = 1 << 62):
    """A module pass: each convolution ``conv_of`` accepts, and whose GEMM fits the profile, becomes a call of its
    twin PrimFunc (one per distinct Conv). Run before legalization. A convolution whose float32 result would be over
    ``max_binding`` bytes stays TVM's, which fuses the cast to float16 into it (the SD VAE's 256-channel 512x512
    convolutions: 256 MiB in float32, 128 MiB in float16)."""
    from tvm import relax

    twins = {}

    def rewrite(mutator, call):
        conv = conv_of(call)
        block = conv and block_of(conv.gemm, profile)
        if not block or conv.gemm.batch * conv.gemm.m * conv.gemm.n * 4 > max_binding:
            return None
        bb = mutator.builder_
        if conv.name not in twins:
            twins[conv.name] = bb.add_func(conv_twin(conv, profile, block).with_attr("global_symbol", conv.name),
                                           conv.name)
        return relax.call_tir(twins[conv.name], list(call.args), tvm_api.expr_type(call))

    return passes.call_rewrite_pass("relax.nn.conv2d", rewrite, "SubgroupMatrixConv2d")


def rewrites(profile: MatrixProfile, max_binding: int) -> list:
    """The module passes of the subgroup-matrix kernel set (pipeline.webgpu.build runs them first); no twin binds
    more than ``max_binding`` bytes (the limits profile's maxStorageBufferBindingSize)."""
    from tvm import relax

    return [rewrite_matmuls(profile, max_binding), rewrite_cast_convs(profile, max_binding),
            relax.transform.DeadCodeElimination(), rewrite_convs(profile, max_binding)]


def overrides(executable, lowered, profile: MatrixProfile) -> dict[str, str]:
    """{twin kernel entry point: its WGSL override} for every twin in a built module (``lowered`` is the module the
    pass list produced, ``executable`` its ``tvm.compile``)."""
    from . import inspection

    T = tvm_api.tir()
    sources = split_kernels(inspection.webgpu_source(executable))
    out = {}
    for gv, func in lowered.functions.items():
        if not isinstance(func, T.PrimFunc) or not gv.name_hint.startswith(("sgmm_", "sgconv_")):
            continue
        entry = f"{gv.name_hint}_kernel"
        if entry not in sources:
            raise WebsdError(f"subgroup-matrix: the build has no WGSL for {entry}; TVM renamed its kernels")
        if gv.name_hint.startswith("sgconv_"):
            conv = parse_conv_name(gv.name_hint)
            out[entry] = conv_wgsl(conv, profile, block_of(conv.gemm, profile), sources[entry])
        else:
            gemm = parse_name(gv.name_hint)
            out[entry] = gemm_wgsl(gemm, profile, block_of(gemm, profile), sources[entry])
    return out


def parse_name(name: str) -> Gemm:
    """Gemm.name back to the Gemm."""
    found = re.fullmatch(r"sgmm_(\d+)x(\d+)x(\d+)x(\d+)(?:_(b?)(t?))?", name)
    if not found:
        raise WebsdError(f"subgroup-matrix: {name} is not a twin kernel name")
    batch, m, n, k = (int(found.group(i)) for i in range(1, 5))
    return Gemm(batch, m, n, k, b_batched=bool(found.group(5)), b_transposed=bool(found.group(6)))


def parse_conv_name(name: str) -> Conv:
    """Conv.name back to the Conv."""
    found = re.fullmatch(r"sgconv_(\d+)x(\d+)x(\d+)x(\d+)_(\d+)x(\d+)x(\d+)_s(\d+)_p(\d+)_(\d+)_(\d+)_(\d+)(_h)?",
                         name)
    if not found:
        raise WebsdError(f"subgroup-matrix: {name} is not a convolution twin's name")
    v = [int(x) for x in found.groups()[:12]]
    return Conv(*v[:8], pad=tuple(v[8:]), out_dtype="float16" if found.group(13) else "float32")
