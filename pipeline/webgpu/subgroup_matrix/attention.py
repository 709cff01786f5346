"""Attention on subgroup matrices: ``Attention``, its tiling, twin and WGSL override, and the Relax rewrite of
``nn.attention`` (the op pipeline.webgpu.flash_attention otherwise fuses).

One subgroup per workgroup takes ``rows`` matrices of query rows of one (batch, head) and goes over the keys a
block of ``keys`` matrices at a time, in one of two forms (``Tiling.one_pass``, from the profile's
``attention_one_pass``):

  * **two passes**: 1. the scores of each block, Q K^T, on subgroup matrices into workgroup memory, keeping each
    row's running maximum; 2. the scores again, each row's exp(score - max) (float16, into workgroup memory) and
    their sum, then P V on subgroup matrices into float32 result matrices. Q K^T is computed twice, but the
    accumulators never need rescaling, which subgroup matrices cannot do row by row.
  * **one pass**, as flash attention, with a lazy rescale: a row's running maximum moves only when a block's
    scores pass it by more than ``SLACK`` (so exp(score - max) stays within float16), and only then, for the whole
    workgroup at once (rare after the first blocks), are the accumulators stored to workgroup memory, their rows
    scaled by exp(old max - new max), and loaded back. Q K^T is computed once.

The output is P V over the sums, written through workgroup memory (a cast to float16, and the head's own columns
only).

Q, K and V are read straight from storage. A head dim that is not whole matrices (SD v1.5's 40 on 16x16) is
zero padded by the rewrite, outside the kernel (``padded``): the padded columns add nothing to Q K^T, their output
columns are sliced off, and the scale stays the unpadded head dim's. Keys that are not whole blocks (CLIP's 77
text tokens) are copied into workgroup memory block by block, zero padded (``Tiling.staged_kv``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from math import ceil, isclose

from ...errors import WebsdError
from ...toolchain import tvm_api
from .. import flash_attention, passes
from .profiles import MatrixProfile
from .wgsl import PROLOGUE, kernel, opaque, twin_header

STORAGE = 16 << 10  # bytes of workgroup memory: WebGPU's default maxComputeWorkgroupStorageSize
# result matrices live at once in a lane's registers (the output accumulators and one block's scores): on an H100
# the fastest tilings of SD v1.5's (head dim 48 padded), SD 2.x's (64) and the 80-dim attention all kept 16 or fewer
REGISTERS = 16
NEG = -3.0e38  # below every score, above -inf (no NaN from -inf - -inf)
# one pass: how far a block's scores may pass a row's running maximum before it moves (exp(8) ~ 2981: P stays well
# within float16, whose largest is 65504)
SLACK = 8.0


@dataclass(frozen=True)
class Attention:
    """o[b, i, h] = softmax_j(q[b, i, h] . k[b, j, h] / sqrt(scale_dim)) v[b, j, h] on (batch, tokens, heads,
    head_dim) float16 tensors (websd::attention's layout), float32 arithmetic, float16 output. ``scale_dim`` is
    the head dim before zero padding (``padded``); 0: ``head_dim``."""
    batch: int
    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    scale_dim: int = 0

    @property
    def scale(self) -> float:
        return (self.scale_dim or self.head_dim) ** -0.5

    @property
    def name(self) -> str:
        scaled = f"s{self.scale_dim}" if self.scale_dim else ""
        return f"sgattn_{self.batch}x{self.heads}x{self.q_len}x{self.kv_len}x{self.head_dim}{scaled}"


@dataclass(frozen=True)
class Tiling:
    """How one workgroup (one subgroup) covers an Attention: its block of query rows, its blocks of keys, and what it
    copies into workgroup memory."""
    rows: int  # matrices of query rows per workgroup
    keys: int  # matrices of keys per block
    staged_kv: bool  # each block's keys and values copied into workgroup memory, zero padded (keys not whole blocks)
    one_pass: bool = False  # one pass over the keys with a lazy rescale (module doc), not two

    def storage(self, size: int, head_dim: int) -> int:
        """Bytes of workgroup memory the kernel declares (matrices of ``size`` x ``size``)."""
        rows, keys = self.rows * size, self.keys * size
        return (rows * keys * (4 + 2) + rows * 2 * 4 + (2 * keys * head_dim * 2 if self.staged_kv else 0)
                + ((rows + 4) * 4 if self.one_pass else 0))  # the alphas, the flag and 3 words of padding


def padded(att: Attention, profile: MatrixProfile) -> Attention:
    """``att`` with its head dim zero padded to whole matrices (itself where it is whole already)."""
    dims = ceil(att.head_dim / profile.k) * profile.k
    if dims == att.head_dim:
        return att
    return Attention(att.batch, att.heads, att.q_len, att.kv_len, dims, att.scale_dim or att.head_dim)


def tilings(att: Attention, profile: MatrixProfile, storage: int = STORAGE) -> list[Tiling]:
    """Every tiling whose query rows are whole blocks and whose workgroup memory fits ``storage`` bytes, most query
    rows first, then fewest keys per block (on an H100, SD v1.5's self-attention ran fastest at one matrix of keys
    for every count of rows, 1.2x over two) (none where the profile's matrices are not square, as the kernel
    multiplies by K^T and by V with one shape, or where the head dim is not whole matrices: see ``padded``)."""
    size = profile.m
    if not profile.m == profile.n == profile.k or att.head_dim % size:
        return []
    out = []
    for rows in (4, 2, 1):
        for keys in (1, 2, 4):
            t = Tiling(rows, keys, att.kv_len % (keys * size) != 0, profile.attention_one_pass)
            if att.q_len % (rows * size) == 0 and t.storage(size, att.head_dim) <= storage:
                out.append(t)
    return out


def tiling(att: Attention, profile: MatrixProfile, storage: int = STORAGE, registers: int = REGISTERS) -> Tiling | None:
    """The first of ``tilings`` whose accumulators and one block's scores fit ``registers`` result matrices, or
    None (CLIP's 77 query rows; SD's VAE attention, one head of 512 dims)."""
    return next((t for t in tilings(att, profile, storage)
                 if t.rows * (att.head_dim // profile.m + t.keys) <= registers), None)


def attention_grid(att: Attention, profile: MatrixProfile, t: Tiling) -> tuple[int, int]:
    """(x, y) workgroups: x over (batch, head, block of query rows), as the twin's."""
    return att.batch * att.heads * att.q_len // (t.rows * profile.m), 1


def attention_twin(att: Attention, profile: MatrixProfile, t: Tiling):
    """The twin: the fused attention kernel of pipeline.webgpu.flash_attention with one thread per query row of the
    real kernel's block, so the grid is the same. Marked opaque."""
    return opaque(flash_attention.attention_kernel(att.batch, att.heads, att.q_len, att.kv_len, att.head_dim,
                                                   "float16", att.scale, rows=t.rows * profile.m))


def attention_wgsl(att: Attention, profile: MatrixProfile, t: Tiling, twin_wgsl: str) -> str:
    """The WGSL override of an attention twin (module doc)."""
    header, entry, v = twin_header(twin_wgsl, ("q", "k", "v", "o"))
    s, lanes = profile.m, profile.subgroup_size
    rows, keys, dims = t.rows * s, t.keys * s, att.head_dim
    tok = att.heads * dims  # one token's stride in q, k, v and o
    tiles = att.q_len // rows
    kv_end = ceil(att.kv_len / keys) * keys
    scale = f"{att.scale!r}"
    left, right = f"subgroup_matrix_left<f16, {s}, {s}>", f"subgroup_matrix_right<f16, {s}, {s}>"
    result = f"subgroup_matrix_result<f32, {s}, {s}>"
    q_of = (lambda i: f"&{v['q']}, q0 + {i * s * tok}u + d0, {tok}u")
    k_of = ((lambda j: f"&sm_k, {j * s * dims}u + d0, {dims}u") if t.staged_kv
            else (lambda j: f"&{v['k']}, kv0 + (j0 + {j * s}u) * {tok}u + d0, {tok}u"))
    v_of = ((lambda d: f"&sm_v, c0 * {dims}u + {d * s}u, {dims}u") if t.staged_kv
            else (lambda d: f"&{v['v']}, kv0 + (j0 + c0) * {tok}u + {d * s}u, {tok}u"))
    scores = [(i, j) for i in range(t.rows) for j in range(t.keys)]
    outs = [(i, d) for i in range(t.rows) for d in range(dims // s)]

    def copy_block(values: bool) -> list[str]:  # this block's keys (and values), zero padded, into workgroup memory
        if not t.staged_kv:
            return []
        return ["    workgroupBarrier();  // the last block's reads of sm_k / sm_v are done",
                f"    for (var e = lane; e < {keys * dims}u; e += {lanes}u) {{",
                f"      let key = j0 + e / {dims}u;",
                "      var kx = f16(0.0);",
                *(["      var vx = f16(0.0);"] if values else []),
                f"      if (key < {att.kv_len}u) {{",
                f"        kx = {v['k']}[kv0 + key * {tok}u + e % {dims}u];",
                *([f"        vx = {v['v']}[kv0 + key * {tok}u + e % {dims}u];"] if values else []),
                "      }",
                "      sm_k[e] = kx;",
                *(["      sm_v[e] = vx;"] if values else []),
                "    }",
                "    workgroupBarrier();"]

    def score_block() -> list[str]:  # sm_s = this block's Q K^T
        return [*(f"    var s_{i}_{j} = {result}();" for i, j in scores),
                f"    for (var d0 = 0u; d0 < {dims}u; d0 += {s}u) {{",
                *(f"      let l{i} = subgroupMatrixLoad<{left}, row_major>({q_of(i)});" for i in range(t.rows)),
                *(f"      let r{j} = subgroupMatrixLoad<{right}, col_major>({k_of(j)});" for j in range(t.keys)),
                *(f"      s_{i}_{j} = subgroupMatrixMultiplyAccumulate(l{i}, r{j}, s_{i}_{j});" for i, j in scores),
                "    }",
                "    workgroupBarrier();  // every lane is done with the last block's sm_s and sm_p",
                *(f"    subgroupMatrixStore<row_major>(&sm_s, {i * s * keys + j * s}u, s_{i}_{j}, {keys}u);"
                  for i, j in scores),
                "    workgroupBarrier();"]

    # attention_by_key: ``group`` lanes along each row's keys (``keys // group`` each), ``lanes // group`` rows at a
    # time; a row's partial max or sum is reduced over its lanes by xor shuffles, which stay within the group
    group = min(keys, lanes)
    per_pass = lanes // group

    def reduced(var: str, statement: str) -> list[str]:  # statement: WGSL with {v} (var) and {x} (another lane's)
        steps = [group >> i for i in range(1, group.bit_length())]
        return ["      " + statement.format(v=var, x=f"subgroupShuffleXor({var}, {step}u)") for step in steps]

    def row_max_by_key() -> list[str]:  # sm_max[row] = max(sm_max[row], this block's scores of the row)
        return [f"    for (var r0 = 0u; r0 < {rows}u; r0 += {per_pass}u) {{",
                f"      let row = r0 + lane / {group}u;",
                f"      var best = {NEG!r};",
                f"      for (var c = lane % {group}u; c < {keys}u; c += {group}u) {{",
                f"        if (j0 + c < {att.kv_len}u) {{ best = max(best, sm_s[row * {keys}u + c] * {scale}); }}",
                "      }",
                *reduced("best", "{v} = max({v}, {x});"),
                f"      if (lane % {group}u == 0u) {{ sm_max[row] = max(sm_max[row], best); }}",
                "    }"]

    def weights_by_key() -> list[str]:  # sm_p = exp(score - max), sm_sum[row] += their sum
        return [f"    for (var r0 = 0u; r0 < {rows}u; r0 += {per_pass}u) {{",
                f"      let row = r0 + lane / {group}u;",
                "      let best = sm_max[row];",
                "      var total = 0.0;",
                f"      for (var c = lane % {group}u; c < {keys}u; c += {group}u) {{",
                "        var weight = 0.0;",
                f"        if (j0 + c < {att.kv_len}u) {{ weight = exp(sm_s[row * {keys}u + c] * {scale} - best); }}",
                "        total += weight;",
                f"        sm_p[row * {keys}u + c] = f16(weight);",
                "      }",
                *reduced("total", "{v} += {x};"),
                f"      if (lane % {group}u == 0u) {{ sm_sum[row] += total; }}",
                "    }"]

    def one_pass_by_row() -> list[str]:  # the lane of each row: its block max, moved max, alpha, P and sum
        return [f"    for (var row = lane; row < {rows}u; row += {lanes}u) {{",
                f"      var top = {NEG!r};",
                f"      for (var c = 0u; c < {keys}u; c++) {{",
                f"        if (j0 + c < {att.kv_len}u) {{ top = max(top, sm_s[row * {keys}u + c] * {scale}); }}",
                "      }",
                *moved_max("sm_max[row]"),
                "      var total = 0.0;",
                f"      for (var c = 0u; c < {keys}u; c++) {{",
                *weight_of("c"),
                "      }",
                "      sm_max[row] = best;",
                "      sm_alpha[row] = alpha;",
                "      sm_sum[row] = sm_sum[row] * alpha + total;",
                "    }"]

    def one_pass_by_key() -> list[str]:  # as by row, the lanes of a row each a share of its keys
        return [f"    for (var r0 = 0u; r0 < {rows}u; r0 += {per_pass}u) {{",
                f"      let row = r0 + lane / {group}u;",
                f"      var top = {NEG!r};",
                f"      for (var c = lane % {group}u; c < {keys}u; c += {group}u) {{",
                f"        if (j0 + c < {att.kv_len}u) {{ top = max(top, sm_s[row * {keys}u + c] * {scale}); }}",
                "      }",
                *reduced("top", "{v} = max({v}, {x});"),
                # the row's first lane alone reads and writes its entries (no lane reads what another writes)
                f"      var old = {NEG!r};",
                f"      if (lane % {group}u == 0u) {{ old = sm_max[row]; }}",
                f"      old = subgroupShuffle(old, lane / {group}u * {group}u);",
                *moved_max("old"),
                "      var total = 0.0;",
                f"      for (var c = lane % {group}u; c < {keys}u; c += {group}u) {{",
                *weight_of("c"),
                "      }",
                *reduced("total", "{v} += {x};"),
                f"      if (lane % {group}u == 0u) {{",
                "        sm_max[row] = best;",
                "        sm_alpha[row] = alpha;",
                "        sm_sum[row] = sm_sum[row] * alpha + total;",
                "      }",
                "    }"]

    def moved_max(old: str) -> list[str]:  # best: the row's max from here on; alpha: what the old sums are worth
        return [f"      let was = {old};",
                "      var best = was;",
                f"      if (top > was + {SLACK!r}) {{ best = top; }}",
                # the first block (was is NEG): nothing summed yet, so 0, said outright rather than left to exp of
                # -3e38 (that was not the H100's NaN, but WGSL's exp promises nothing that far out)
                f"      let alpha = select(exp(was - best), 0.0, was == {NEG!r});",
                f"      if (best != was && was != {NEG!r}) {{ rescale = true; }}  // accumulators hold sums of was"]

    def weight_of(c: str) -> list[str]:
        score = f"sm_s[row * {keys}u + {c}] * {scale}"
        return ["        var weight = 0.0;",
                f"        if (j0 + {c} < {att.kv_len}u) {{ weight = exp({score} - best); }}",
                "        total += weight;",
                f"        sm_p[row * {keys}u + {c}] = f16(weight);"]

    # whether any row's max moved, for the whole workgroup (workgroupUniformLoad: a uniform branch around the
    # barriers and matrix loads), in the word after the alphas, padded to 16 bytes: with the flag a lone u32
    # workgroup variable every one-pass kernel returned NaN on an H100 (lavapipe was right), so every workgroup
    # variable stays an array of whole 16-byte words, as in the two-pass kernel that is right there
    def rescaled() -> list[str]:  # every accumulator's rows times their alpha, through sm_s (its scores are used)
        out = ["    let moved = subgroupAny(rescale);",
               f"    if (lane == 0u) {{ sm_alpha[{rows}u] = select(0.0, 1.0, moved); }}",
               f"    if (workgroupUniformLoad(&sm_alpha[{rows}u]) != 0.0) {{"]
        room = t.rows * t.keys  # matrices of s x s that sm_s holds
        for first in range(0, len(outs), room):
            batch = outs[first:first + room]
            out += [f"      subgroupMatrixStore<row_major>(&sm_s, {n * s * s}u, o_{i}_{d}, {s}u);"
                    for n, (i, d) in enumerate(batch)]
            out.append("      workgroupBarrier();")
            for n, (i, _) in enumerate(batch):
                out += [f"      for (var e = lane; e < {s * s}u; e += {lanes}u) {{",
                        f"        sm_s[{n * s * s}u + e] *= sm_alpha[{i * s}u + e / {s}u];",
                        "      }"]
            out.append("      workgroupBarrier();")
            out += [f"      o_{i}_{d} = subgroupMatrixLoad<{result}, row_major>(&sm_s, {n * s * s}u, {s}u);"
                    for n, (i, d) in enumerate(batch)]
            out.append("      workgroupBarrier();")
        return out + ["    }"]

    lines = [
        *PROLOGUE,
        f"  let batch = block_x / {att.heads * tiles}u;",
        f"  let head = block_x / {tiles}u % {att.heads}u;",
        f"  let row0 = block_x % {tiles}u * {rows}u;",
        f"  let q0 = (batch * {att.q_len}u + row0) * {tok}u + head * {dims}u;",
        f"  let kv0 = batch * {att.kv_len * tok}u + head * {dims}u;",
    ]
    lines += [f"  for (var row = lane; row < {rows}u; row += {lanes}u) {{",
              f"    sm_max[row] = {NEG!r};",
              "    sm_sum[row] = 0.0;",
              "  }",
              "  workgroupBarrier();"]
    if t.one_pass:
        lines += ["  // one pass: P = exp(score - running max), its row sums, the accumulators rescaled where the max "
                  "moved, and P V",
                  *(f"  var o_{i}_{d} = {result}();" for i, d in outs),
                  f"  for (var j0 = 0u; j0 < {kv_end}u; j0 += {keys}u) {{",
                  *copy_block(True),
                  *score_block(),
                  "    var rescale = false;",
                  *(one_pass_by_key() if profile.attention_by_key else one_pass_by_row()),
                  *rescaled()]
    else:
        lines += ["  // pass 1: each row's largest score",
                  f"  for (var j0 = 0u; j0 < {kv_end}u; j0 += {keys}u) {{",
                  *copy_block(False),
                  *score_block(),
                  *(row_max_by_key() if profile.attention_by_key else [
                      f"    for (var row = lane; row < {rows}u; row += {lanes}u) {{",
                      "      var best = sm_max[row];",
                      f"      for (var c = 0u; c < {keys}u; c++) {{",
                      f"        if (j0 + c < {att.kv_len}u) {{ best = max(best, sm_s[row * {keys}u + c] * {scale}); }}",
                      "      }",
                      "      sm_max[row] = best;",
                      "    }"]),
                  "  }",
                  "  // pass 2: P = exp(score - max), its row sums, and P V",
                  *(f"  var o_{i}_{d} = {result}();" for i, d in outs),
                  f"  for (var j0 = 0u; j0 < {kv_end}u; j0 += {keys}u) {{",
                  *copy_block(True),
                  *score_block(),
                  *(weights_by_key() if profile.attention_by_key else [
                      f"    for (var row = lane; row < {rows}u; row += {lanes}u) {{",
                      "      let best = sm_max[row];",
                      "      var total = sm_sum[row];",
                      f"      for (var c = 0u; c < {keys}u; c++) {{",
                      *weight_of("c"),
                      "      }",
                      "      sm_sum[row] = total;",
                      "    }"])]
    lines += ["    workgroupBarrier();",
              f"    for (var c0 = 0u; c0 < {keys}u; c0 += {s}u) {{",
              *(f"      let p{i} = subgroupMatrixLoad<{left}, row_major>(&sm_p, {i * s * keys}u + c0, {keys}u);"
                for i in range(t.rows))]
    for d in range(dims // s):
        lines += ["      {",
                  f"        let vr = subgroupMatrixLoad<{right}, row_major>({v_of(d)});",
                  *(f"        o_{i}_{d} = subgroupMatrixMultiplyAccumulate(p{i}, vr, o_{i}_{d});"
                    for i in range(t.rows)),
                  "      }"]
    lines += ["    }", "  }"]
    for i, d in outs:  # through sm_s: divided by the row's sum and cast
        lines += ["  workgroupBarrier();",
                  f"  subgroupMatrixStore<row_major>(&sm_s, 0u, o_{i}_{d}, {s}u);",
                  "  workgroupBarrier();",
                  f"  for (var e = lane; e < {s * s}u; e += {lanes}u) {{",
                  f"    let row = {i * s}u + e / {s}u;",
                  f"    {v['o']}[q0 + row * {tok}u + {d * s}u + e % {s}u] = f16(sm_s[e] / sm_sum[row]);",
                  "  }"]
    workgroup = (f"var<workgroup> sm_s : array<f32, {rows * keys}>;\n"
                 f"var<workgroup> sm_p : array<f16, {rows * keys}>;\n"
                 f"var<workgroup> sm_max : array<f32, {rows}>;\n"
                 f"var<workgroup> sm_sum : array<f32, {rows}>;\n"
                 + (f"var<workgroup> sm_k : array<f16, {keys * dims}>;\n"
                    f"var<workgroup> sm_v : array<f16, {keys * dims}>;\n" if t.staged_kv else "")
                 + (f"var<workgroup> sm_alpha : array<f32, {rows + 4}>;\n"
                    if t.one_pass else ""))
    return kernel(header, entry, profile, lines, workgroup, subgroup_ops=profile.attention_by_key or t.one_pass)


def attention_of(call) -> Attention | None:
    """The Attention a Relax ``nn.attention`` call is, when this kernel takes it: float16 q, k, v of static
    (batch, tokens, heads, head_dim) shapes (k and v alike, heads and head dim as q's), no bias or mask, the
    default scale."""
    from ..kernels import static_shape

    types = [tvm_api.expr_type(a) for a in call.args]
    shapes = [static_shape(ty) for ty in types]
    if (len(call.args) != 3 or call.attrs.causal_mask is not None or any(s is None or len(s) != 4 for s in shapes)
            or any(str(ty.dtype) != "float16" for ty in types)):
        return None
    (batch, q_len, heads, head_dim), (kb, kv_len, kh, kd), v_shape = shapes
    if (kb, kh, kd) != (batch, heads, head_dim) or v_shape != [batch, kv_len, heads, head_dim]:
        return None
    scale = call.attrs.scale
    if scale is not None and not isclose(float(scale.value), head_dim ** -0.5, rel_tol=1e-6):
        return None
    return Attention(batch, heads, q_len, kv_len, head_dim)


def rewrite_attention(profile: MatrixProfile, max_binding: int = 1 << 62):
    """A module pass: each ``nn.attention`` ``attention_of`` accepts and ``tiling`` fits (its head dim ``padded``)
    becomes a call of its twin (one per distinct Attention), between a zero pad of q, k and v and a slice of the
    output where the head dim is padded, and a cast to the call's dtype where that is not float16. Run before
    ``flash_attention.fuse_attention``, which takes the rest."""
    from tvm import relax

    twins = {}

    def rewrite(mutator, call):
        att = attention_of(call)
        run = att and padded(att, profile)
        t = run and tiling(run, profile)
        if not t or run.batch * run.q_len * run.heads * run.head_dim * 2 > max_binding:
            return None
        bb = mutator.builder_
        if run.name not in twins:
            twins[run.name] = bb.add_func(attention_twin(run, profile, t).with_attr("global_symbol", run.name),
                                          run.name)
        args = list(call.args)
        if run.head_dim != att.head_dim:
            args = [bb.emit(relax.op.nn.pad(a, [0, 0, 0, 0, 0, 0, 0, run.head_dim - att.head_dim])) for a in args]
        shape = [run.batch, run.q_len, run.heads, run.head_dim]
        out = relax.call_tir(twins[run.name], args, tvm_api.tensor_type(shape, "float16"))
        if run.head_dim != att.head_dim:
            out = relax.op.strided_slice(bb.emit(out), axes=[3], begin=[0], end=[att.head_dim])
        dtype = str(tvm_api.expr_type(call).dtype)
        return out if dtype == "float16" else relax.op.astype(bb.emit(out), dtype)

    return passes.call_rewrite_pass("relax.nn.attention", rewrite, "SubgroupMatrixAttention")


def parse_name(name: str) -> Attention:
    """Attention.name back to the Attention."""
    found = re.fullmatch(r"sgattn_(\d+)x(\d+)x(\d+)x(\d+)x(\d+)(?:s(\d+))?", name)
    if not found:
        raise WebsdError(f"subgroup-matrix: {name} is not an attention twin's name")
    return Attention(*(int(x or 0) for x in found.groups()))


def override(att: Attention, profile: MatrixProfile, twin_wgsl: str) -> str:
    """The override of a built twin (its tiling recomputed, as the rewrite chose it)."""
    return attention_wgsl(att, profile, tiling(att, profile), twin_wgsl)
