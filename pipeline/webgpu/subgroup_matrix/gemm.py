"""Matmuls on subgroup matrices: ``Gemm``, its twin and WGSL override, and the Relax rewrite of ``matmul``.

The override comes in two forms (``gemm_layout`` picks by the profile's ``gemm_subgroups``):
  * **direct**: one subgroup per workgroup, a block of up to 4x4 result matrices, every matrix loaded straight from
    storage;
  * **staged**: (down x across) subgroups per workgroup, each its own block of the workgroup's tile. Per step of
    the reduction the whole workgroup copies the A and B tiles into workgroup memory with 4-element vector loads
    (coalesced, each element read once per workgroup rather than once per subgroup), and it loads the next step's
    into registers while the subgroups multiply the current one from workgroup memory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod

from ...errors import WebsdError
from ...toolchain import tvm_api
from .. import passes
from .profiles import MatrixProfile
from .wgsl import PROLOGUE, kernel, opaque, tile_copies, twin_header, vectorized

STORAGE = 16 << 10  # bytes of workgroup memory for a staged kernel's tiles: WebGPU's default


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


def block_of(gemm: Gemm, profile: MatrixProfile, most: int = 4,
             subgroups: tuple[int, int] = (1, 1)) -> tuple[int, int] | None:
    """How many result matrices (rows, cols) one subgroup computes, with ``subgroups`` (down, across) per workgroup:
    the largest up to ``most`` each way whose workgroup tiles divide the output, shrunk until the grid has the
    profile's ``enough_workgroups``; None when the matmul's sizes are not multiples of the profile's matrix shape
    (times the subgroups)."""
    p, (down, across) = profile, subgroups
    if gemm.m % (down * p.m) or gemm.n % (across * p.n) or gemm.k % p.k:
        return None
    rows = max(r for r in (1, 2, 4, 8) if r <= most and gemm.m % (down * r * p.m) == 0)
    cols = max(c for c in (1, 2, 4, 8) if c <= most and gemm.n % (across * c * p.n) == 0)
    while rows * cols > 1 and prod(grid(gemm, p, (down * rows, across * cols))) < p.enough_workgroups:
        rows, cols = (rows // 2, cols) if rows >= cols else (rows, cols // 2)
    return rows, cols


def gemm_layout(gemm: Gemm, profile: MatrixProfile) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(block, subgroups) of a matmul's kernel: the profile's ``gemm_subgroups`` where the output divides into
    their tiles and one step of them fits workgroup memory (the staged kernel), else one subgroup (the direct one);
    None where no block fits."""
    subgroups = profile.gemm_subgroups
    block = block_of(gemm, profile, subgroups=subgroups)
    staged = subgroups != (1, 1)
    if staged and (block is None or not gemm_depth(gemm, profile, block, subgroups)):
        subgroups, block = (1, 1), block_of(gemm, profile)
    return (block, subgroups) if block else None


def padded_rows(gemm: Gemm, profile: MatrixProfile) -> Gemm | None:
    """The matmul with its rows zero padded to the fewest that ``gemm_layout`` takes (the gemm itself where they
    need none; None where no padding helps). SD's cross-attention keys and values (2 x 77 text tokens) and its
    time embeddings (2 rows) are such matmuls: TVM's own kernels for them took 4.5 of the 88 ms of kernels in a
    UNet step on an H100 (benchmarks/results/webgpu-sd15-random-h100-sm-variants-0fc3b13.md)."""
    for step in (1, 2, 4, 8):
        rows = -(-gemm.m // (step * profile.m)) * step * profile.m
        padded = Gemm(gemm.batch, rows, gemm.n, gemm.k, gemm.b_batched, gemm.b_transposed)
        if gemm_layout(padded, profile):
            return padded
    return None


def gemm_depth(gemm: Gemm, profile: MatrixProfile, block: tuple[int, int], subgroups: tuple[int, int],
               storage: int = STORAGE) -> int:
    """How deep into the reduction one step of a staged kernel copies: the most of 4, 2, 1 matrix depths that
    divides it and keeps the A and B tiles (float16) within ``storage`` bytes (0: not even one fits)."""
    tile = subgroups[0] * block[0] * profile.m + subgroups[1] * block[1] * profile.n
    return next((d * profile.k for d in (4, 2, 1) if gemm.k % (d * profile.k) == 0
                 and tile * d * profile.k * 2 <= storage), 0)


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


def gemm_twin(gemm: Gemm, profile: MatrixProfile, block: tuple[int, int], subgroups: tuple[int, int] = (1, 1)):
    """The twin PrimFunc (module doc): the matmul in plain TIR, launched on the real kernel's grid with its
    workgroup (``subgroups`` subgroups' worth of threads), each thread summing some of the tile's outputs. Marked
    scheduled."""
    from tvm import te

    sch = tvm_api.schedule(te.create_prim_func(list(gemm_te(gemm))))
    (rows, cols), (down, across) = block, subgroups
    bi, i, j, k = sch.get_loops(tvm_api.schedule_block(sch, "C"))
    i_out, i_in = sch.split(i, [None, down * rows * profile.m])
    j_out, j_in = sch.split(j, [None, across * cols * profile.n])
    sch.reorder(bi, i_out, j_out, i_in, j_in, k)
    sch.bind(j_out, "blockIdx.x")
    sch.bind(sch.fuse(bi, i_out), "blockIdx.y")
    thread, _ = sch.split(sch.fuse(i_in, j_in), [down * across * profile.subgroup_size, None])
    sch.bind(thread, "threadIdx.x")
    return opaque(tvm_api.mark_scheduled(sch.mod["main"]))


def gemm_wgsl(gemm: Gemm, profile: MatrixProfile, block: tuple[int, int], twin_wgsl: str,
              subgroups: tuple[int, int] = (1, 1)) -> str:
    """The WGSL override of a twin kernel (module doc): TVM's header, then the subgroup-matrix kernel, direct on
    one subgroup or staged on several."""
    if subgroups != (1, 1):
        return staged_gemm_wgsl(gemm, profile, block, twin_wgsl, subgroups)
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
        *PROLOGUE,
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
    return kernel(header, entry, p, lines)


def staged_gemm_wgsl(gemm: Gemm, profile: MatrixProfile, block: tuple[int, int], twin_wgsl: str,
                     subgroups: tuple[int, int]) -> str:
    """The staged override (module doc). A and B are read as 4-element vectors (TVM's bindings retyped: every
    offset is a multiple of 4, as the matrix sizes are); the tiles are A's rows and, like B in storage, B's
    columns (``b_transposed``) or rows, ``depth`` of the reduction deep."""
    header, entry, v = twin_header(twin_wgsl)
    header = vectorized(vectorized(header, v["A"], entry), v["B"], entry)
    p, (rows, cols), (down, across) = profile, block, subgroups
    m, n, k = gemm.m, gemm.n, gemm.k
    depth = gemm_depth(gemm, p, block, subgroups)
    tile_m, tile_n = down * rows * p.m, across * cols * p.n
    threads = down * across * p.subgroup_size
    left = f"subgroup_matrix_left<f16, {p.k}, {p.m}>"
    right = f"subgroup_matrix_right<f16, {p.n}, {p.k}>"
    result = f"subgroup_matrix_result<f32, {p.n}, {p.m}>"
    accs = [(i, j) for i in range(rows) for j in range(cols)]
    # each tile's rows, vectors per row and row r's first vector in storage at step ks (tile_copies): A's rows run
    # along k; B's along k when transposed, else along n
    a_regs, a_loads, a_stores = tile_copies("a", v["A"], tile_m, depth // 4, f"a0 + r * {k // 4}u + ks / 4u", threads)
    b_regs, b_loads, b_stores = tile_copies(
        "b", v["B"], *((tile_n, depth // 4, f"b0 + (col0 + r) * {k // 4}u + ks / 4u") if gemm.b_transposed
                       else (depth, tile_n // 4, f"b0 + (ks + r) * {n // 4}u + col0 / 4u")), threads)
    row_blocks = m // tile_m
    my_row, my_col = f"sid / {across}u * {rows * p.m}u", f"sid % {across}u * {cols * p.n}u"
    lines = [
        *PROLOGUE,
        f"  let batch = blockIdx.y / {row_blocks}u;",
        f"  let row0 = (blockIdx.y % {row_blocks}u) * {tile_m}u;",
        f"  let col0 = block_x * {tile_n}u;",
        f"  let a0 = (batch * {m * k}u + row0 * {k}u) / 4u;",
        f"  let b0 = {f'batch * {k * n // 4}u' if gemm.b_batched else '0u'};",
        f"  let my_row = {my_row};  // this subgroup's block in the tile",
        f"  let my_col = {my_col};",
        *a_regs, *b_regs,
        *(f"  var acc_{i}_{j} = {result}();" for i, j in accs),
        "  {  // the first step's tiles into registers",
        "    let ks = 0u;",
        *a_loads, *b_loads,
        "  }",
        f"  for (var k0 = 0u; k0 < {k}u; k0 += {depth}u) {{",
        "    workgroupBarrier();  // the last step's multiplies are done with the tiles",
        *a_stores, *b_stores,
        "    workgroupBarrier();",
        f"    if (k0 + {depth}u < {k}u) {{  // the next step's tiles into registers, loading while this one multiplies",
        f"      let ks = k0 + {depth}u;",
        *("  " + line for line in a_loads + b_loads),
        "    }",
        f"    for (var kc = 0u; kc < {depth}u; kc += {p.k}u) {{",
        *(f"      let l{i} = subgroupMatrixLoad<{left}, row_major>(&a_tile, (my_row + {i * p.m}u) * {depth}u + kc, "
          f"{depth}u);" for i in range(rows)),
        *((f"      let r{j} = subgroupMatrixLoad<{right}, col_major>(&b_tile, (my_col + {j * p.n}u) * {depth}u + kc, "
           f"{depth}u);") if gemm.b_transposed else
          (f"      let r{j} = subgroupMatrixLoad<{right}, row_major>(&b_tile, kc * {tile_n}u + my_col + {j * p.n}u, "
           f"{tile_n}u);") for j in range(cols)),
        *(f"      acc_{i}_{j} = subgroupMatrixMultiplyAccumulate(l{i}, r{j}, acc_{i}_{j});" for i, j in accs),
        "    }",
        "  }",
        *(f"  subgroupMatrixStore<row_major>(&{v['C']}, batch * {m * n}u + (row0 + my_row + {i * p.m}u) * {n}u + col0 "
          f"+ my_col + {j * p.n}u, acc_{i}_{j}, {n}u);" for i, j in accs),
    ]
    workgroup = (f"var<workgroup> a_tile : array<f16, {tile_m * depth}>;\n"
                 f"var<workgroup> b_tile : array<f16, {depth * tile_n}>;\n")
    return kernel(header, entry, p, lines, workgroup, down * across)


def matmul_gemm(call) -> Gemm | None:
    """The Gemm a Relax ``matmul`` call is, when it is one these kernels take: float16 operands, a float32 result,
    static shapes, A (batch..., m, k) and B (k, n) or (batch..., k, n) with the same batch."""
    from ..kernels import static_shape

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
    """A module pass: each matmul ``matmul_gemm`` accepts, and whose sizes fit the profile (its rows zero padded
    where that makes them fit: ``padded_rows``), becomes a call of its twin PrimFunc (one per distinct Gemm),
    reshaped back to the matmul's output shape. Run before legalization.
    A matmul whose float32 result would be over ``max_binding`` bytes stays TVM's (which fuses the cast after it)."""
    from tvm import relax

    twins = {}

    def rewrite(mutator, call):
        gemm = matmul_gemm(call)
        run = gemm and padded_rows(gemm, profile)
        if not run or run.batch * run.m * run.n * 4 > max_binding:
            return None
        a, b = call.args
        weight = transposed_weight(mutator, b)
        if weight is not None:  # x @ permute_dims(w) (a Linear): read w (n, k) in place, no transpose kernel
            b, run = weight, Gemm(run.batch, run.m, run.n, run.k, b_transposed=True)
        bb = mutator.builder_
        if run.name not in twins:
            twins[run.name] = bb.add_func(
                gemm_twin(run, profile, *gemm_layout(run, profile)).with_attr("global_symbol", run.name), run.name)
        a3 = bb.emit(relax.op.reshape(a, (run.batch, gemm.m, run.k)))
        if run.m != gemm.m:  # zero rows below A's, sliced off the result
            a3 = bb.emit(relax.op.nn.pad(a3, [0, 0, 0, run.m - gemm.m, 0, 0]))
        if run.b_batched:
            b = bb.emit(relax.op.reshape(b, (run.batch, run.k, run.n)))
        out = bb.emit(relax.call_tir(twins[run.name], [a3, b],
                                     tvm_api.tensor_type((run.batch, run.m, run.n), "float32")))
        if run.m != gemm.m:
            out = bb.emit(relax.op.strided_slice(out, axes=[1], begin=[0], end=[gemm.m]))
        return relax.op.reshape(out, tvm_api.expr_type(call).shape)

    return passes.call_rewrite_pass("relax.matmul", rewrite, "SubgroupMatrixMatmul")


def override(gemm: Gemm, profile: MatrixProfile, twin_wgsl: str) -> str:
    """The WGSL override of a built matmul twin, in the layout the rewrite built the twin with."""
    block, subgroups = gemm_layout(gemm, profile)
    return gemm_wgsl(gemm, profile, block, twin_wgsl, subgroups)


def parse_name(name: str) -> Gemm:
    """Gemm.name back to the Gemm."""
    found = re.fullmatch(r"sgmm_(\d+)x(\d+)x(\d+)x(\d+)(?:_(b?)(t?))?", name)
    if not found:
        raise WebsdError(f"subgroup-matrix: {name} is not a twin kernel name")
    batch, m, n, k = (int(found.group(i)) for i in range(1, 5))
    return Gemm(batch, m, n, k, b_batched=bool(found.group(5)), b_transposed=bool(found.group(6)))
