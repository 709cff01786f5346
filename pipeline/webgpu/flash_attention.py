"""Fused attention for WebGPU: one kernel per attention layer, all heads, the scores never written to memory.

The submodels' attention processor (pipeline.submodels.attention) traces attention as one op of ours,
``websd::attention(q, k, v, scale)`` on (batch, tokens, heads, head_dim) tensors. ``CONVERTERS`` imports it as
Relax's ``nn.attention`` (same layout), which TVM's CPU build legalizes as it is (``verify`` checks it against
PyTorch); for WebGPU, ``fuse_attention`` replaces each such call by ``attention_kernel``.

The kernel is flash attention (online softmax over blocks of keys) fitted to WebGPU's *default* limits (16 KiB of
workgroup storage, 256 invocations, 8 storage buffers; it binds 4): a workgroup of ``ROWS`` threads takes
``ROWS`` query rows of one (batch, head), each thread one row, its query and output accumulator in registers
(float32). Per block of keys the threads copy the block's keys and values into workgroup memory together, then
each thread scores its row against them, rescales its running max, sum and accumulator once, and adds the block's
values. Every thread reads the same key at once (a workgroup-memory broadcast). The block size is the largest
power of two whose keys and values fit ``TILE_BYTES``.

A single-head attention (SD's VAE: one head of 512 channels over 64x64 latent pixels at 512x512) is the
exception, which ``split_single_head_attention`` takes first: one row per thread there means 512 float32
accumulators per thread and few workgroups (53-58 ms per image on an H100). As two matmuls with a softmax
between, the scores written out, it is two big GEMMs: the compile's matmul kernels, or on subgroup matrices the
variant's.

TVM's own WebGPU-aware prefill kernel (``relax.frontend.nn.llm``'s ``_attention_sequence_prefill``) was the
starting point, but it is private API and its tiles (Q, K, V and the scores in workgroup memory) exceed 16 KiB for
SD v1.5's head dims 80 and 160 in float16, and every head dim >= 80 in float32.
"""
from __future__ import annotations

from math import ceil

from . import kernels as gpu_kernels
from . import passes
from ..toolchain import tvm_api

ROWS = 64  # query rows (threads) per workgroup
TILE_BYTES = 12 << 10  # keys + values of one block in workgroup memory; WebGPU's default allows 16 KiB in all
MAX_KEYS = 64  # keys per block at most (the scores of a block live in each thread's registers)
NEG = -3.0e38  # a masked score: exp(NEG - m) is 0 without the NaNs -inf - -inf would give


def keys_per_block(head_dim: int, dtype: str, tile_bytes: int = TILE_BYTES) -> int:
    """The keys per block: the largest power of two up to ``MAX_KEYS`` whose keys and values (``head_dim`` each,
    ``dtype``) fit ``tile_bytes`` (at least 1)."""
    itemsize = 2 if dtype == "float16" else 4
    keys = 1
    while keys * 2 <= MAX_KEYS and 2 * (keys * 2) * head_dim * itemsize <= tile_bytes:
        keys *= 2
    return keys


def attention_kernel(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, dtype: str, scale: float,
                     causal: bool = False, gpu: bool = True, rows: int = ROWS, keys: int | None = None):
    """The flash-attention PrimFunc: o[b, i, h] = softmax_j(scale * q[b, i, h] . k[b, j, h]) @ v[b, :, h] on
    (batch, tokens, heads, head_dim) tensors of ``dtype``, arithmetic in float32; ``causal``: only keys j <= i
    (Relax's ``causal_mask="TopLeft"``, CLIP's text encoder).

    ``gpu=False`` gives the same loops for TVM's CPU target (no thread bindings or workgroup memory: each
    "thread", a serial loop, copies every block itself), so the arithmetic can be checked there."""
    T = tvm_api.script_tir()
    block = tvm_api.script_block()
    keys = keys or keys_per_block(head_dim, dtype)
    tiles = ceil(q_len / rows)
    kv_blocks = ceil(kv_len / keys)
    # the copy of a block: thread t copies elements t, t + rows, ... of the keys x head_dim tile
    copies, stride = (ceil(keys * head_dim / rows), rows) if gpu else (keys * head_dim, 1)
    shared, local = ("shared", "local") if gpu else ("global", "global")
    f32 = "float32"

    def grid(extent, tag):
        return T.thread_binding(extent, thread=tag) if gpu else T.serial(extent)

    def sync():
        return T.tvm_storage_sync("shared") if gpu else T.int32(0)

    def copied(n, tid):  # the element of the keys x head_dim block this thread copies in its n-th step
        return n * stride + (tid if gpu else 0)

    def tile_row(n, tid):
        return copied(n, tid) // head_dim

    def tile_col(n, tid):
        return copied(n, tid) % head_dim

    def batch_of(wg):
        return wg // (heads * tiles)

    def head_of(wg):
        return wg // tiles % heads

    def row_of(wg, tid):
        return wg % tiles * rows + tid

    def keys_seen(row):  # the keys a row attends to: j < keys_seen(row)
        return T.min(kv_len, row + 1) if causal else kv_len

    @tvm_api.script_prim_func()
    def flash_attention(q: T.Buffer((batch, q_len, heads, head_dim), dtype),
                        k: T.Buffer((batch, kv_len, heads, head_dim), dtype),
                        v: T.Buffer((batch, kv_len, heads, head_dim), dtype),
                        o: T.Buffer((batch, q_len, heads, head_dim), dtype)):
        for wg_loop in grid(batch * heads * tiles, "blockIdx.x"):
            for tid_loop in grid(rows, "threadIdx.x"):
                with block("attention"):
                    wg, tid = T.axis.remap("SS", [wg_loop, tid_loop])
                    T.reads()
                    T.writes()
                    k_tile = T.alloc_buffer((keys, head_dim), dtype, scope=shared)
                    v_tile = T.alloc_buffer((keys, head_dim), dtype, scope=shared)
                    q_row = T.alloc_buffer((head_dim,), f32, scope=local)
                    acc = T.alloc_buffer((head_dim,), f32, scope=local)
                    score = T.alloc_buffer((keys,), f32, scope=local)
                    state = T.alloc_buffer((3,), f32, scope=local)  # running max, running sum, rescale factor
                    for c in T.serial(head_dim):
                        acc[c] = T.float32(0)
                        if row_of(wg, tid) < q_len:
                            q_row[c] = T.Cast(f32, q[batch_of(wg), row_of(wg, tid), head_of(wg), c])
                        else:
                            q_row[c] = T.float32(0)
                    state[0] = T.float32(NEG)
                    state[1] = T.float32(0)
                    for kb in T.serial(kv_blocks):
                        sync()  # everyone is done with the last block
                        for n in T.serial(copies):
                            if copied(n, tid) < keys * head_dim:
                                if kb * keys + tile_row(n, tid) < kv_len:
                                    k_tile[tile_row(n, tid), tile_col(n, tid)] = k[
                                        batch_of(wg), kb * keys + tile_row(n, tid), head_of(wg), tile_col(n, tid)]
                                    v_tile[tile_row(n, tid), tile_col(n, tid)] = v[
                                        batch_of(wg), kb * keys + tile_row(n, tid), head_of(wg), tile_col(n, tid)]
                                else:
                                    k_tile[tile_row(n, tid), tile_col(n, tid)] = T.Cast(dtype, 0)
                                    v_tile[tile_row(n, tid), tile_col(n, tid)] = T.Cast(dtype, 0)
                        sync()  # the block is in workgroup memory
                        state[2] = state[0]
                        for j in T.serial(keys):
                            score[j] = T.float32(0)
                            for c in T.serial(head_dim):
                                score[j] = score[j] + q_row[c] * T.Cast(f32, k_tile[j, c])
                            if kb * keys + j < keys_seen(row_of(wg, tid)):
                                score[j] = score[j] * T.float32(scale)
                            else:
                                score[j] = T.float32(NEG)
                            state[0] = T.max(state[0], score[j])
                        state[2] = T.exp(state[2] - state[0])  # old max -> new max
                        state[1] = state[1] * state[2]
                        for j in T.serial(keys):
                            score[j] = T.exp(score[j] - state[0])
                            state[1] = state[1] + score[j]
                        for c in T.serial(head_dim):
                            acc[c] = acc[c] * state[2]
                            for j in T.serial(keys):
                                acc[c] = acc[c] + score[j] * T.Cast(f32, v_tile[j, c])
                    if row_of(wg, tid) < q_len:
                        for c in T.serial(head_dim):
                            o[batch_of(wg), row_of(wg, tid), head_of(wg), c] = T.Cast(dtype, acc[c] / state[1])

    # no global_symbol: the builder names it (one per shape) and AttachGlobalSymbol adds it
    return tvm_api.mark_scheduled(flash_attention).without_attr("global_symbol")


def _convert_attention(node, importer):
    """``websd::attention(q, k, v, scale, causal)`` (pipeline.submodels.attention) -> Relax ``nn.attention``: the
    same (batch, tokens, heads, head_dim) layout; causal: its top-left mask (key j <= query i)."""
    from tvm import relax

    q, k, v = (importer.env[a] for a in node.args[:3])
    causal = node.args[4] if len(node.args) > 4 else node.kwargs.get("causal", False)
    return importer.block_builder.emit(relax.op.nn.attention(q, k, v, scale=float(node.args[3]),
                                                             causal_mask="TopLeft" if causal else None))


# the importer's converters for ops of ours, keyed as TVM's importer names a torch op (its overload's __name__)
CONVERTERS = {"attention.default": _convert_attention}


def fuse_attention(gpu: bool = True):
    """A module pass: every ``nn.attention`` without bias, unmasked or with a top-left causal mask, on static 4-D
    tensors of one dtype (query and key/value heads and head dims equal) becomes one call of
    ``attention_kernel`` (``gpu=False``: its form for TVM's CPU target)."""
    from tvm import relax

    def fuse(mutator, call):
        attrs = call.attrs
        types = [tvm_api.expr_type(a) for a in call.args]
        shapes = [gpu_kernels.static_shape(t) for t in types]
        if (len(call.args) != 3 or attrs.causal_mask not in (None, "TopLeft")
                or any(s is None or len(s) != 4 for s in shapes) or len({str(t.dtype) for t in types}) != 1):
            return None
        (batch, q_len, heads, head_dim), (kb, kv_len, kh, kd), v_shape = shapes
        if (kb, kh, kd) != (batch, heads, head_dim) or v_shape != [batch, kv_len, heads, head_dim]:
            return None
        dtype = str(types[0].dtype)
        scale = float(attrs.scale.value) if attrs.scale is not None else head_dim ** -0.5
        kernel = attention_kernel(batch, heads, q_len, kv_len, head_dim, dtype, scale,
                                  causal=attrs.causal_mask == "TopLeft", gpu=gpu)
        bb = mutator.builder_
        out = relax.call_tir(bb.add_func(kernel, "flash_attention"), list(call.args),
                             tvm_api.tensor_type([batch, q_len, heads, head_dim], dtype))
        out_dtype = str(tvm_api.expr_type(call).dtype)
        return out if out_dtype == dtype else relax.op.astype(bb.emit(out), out_dtype)

    return passes.call_rewrite_pass("relax.nn.attention", fuse, "FuseAttention")


def split_single_head_attention(max_binding: int):
    """A module pass: every ``nn.attention`` of one head, without bias or mask, on static (batch, tokens, 1,
    head_dim) tensors whose float32 scores bind at most ``max_binding`` bytes, becomes softmax(scale * q k^T) v as
    two batched matmuls (float32 results: the scores and their softmax in float32, the probabilities cast back to
    the inputs' dtype for the second, as the fused kernel does) with the softmax between (module doc: why)."""
    from tvm import relax

    def split(mutator, call):
        attrs = call.attrs
        types = [tvm_api.expr_type(a) for a in call.args]
        shapes = [gpu_kernels.static_shape(t) for t in types]
        if (len(call.args) != 3 or attrs.causal_mask is not None or any(s is None or len(s) != 4 for s in shapes)
                or len({str(t.dtype) for t in types}) != 1):
            return None
        (batch, q_len, heads, head_dim), (kb, kv_len, kh, kd), v_shape = shapes
        if (heads, kh, kd, kb) != (1, 1, head_dim, batch) or v_shape != [batch, kv_len, 1, head_dim]:
            return None
        if batch * q_len * kv_len * 4 > max_binding:
            return None
        dtype = str(types[0].dtype)
        scale = float(attrs.scale.value) if attrs.scale is not None else head_dim ** -0.5
        bb = mutator.builder_
        q, k, v = (bb.emit(relax.op.reshape(a, (batch, n, head_dim)))
                   for a, n in zip(call.args, (q_len, kv_len, kv_len)))
        scores = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 2, 1])), out_dtype="float32"))
        scaled = bb.emit(relax.op.multiply(scores, relax.const(scale, "float32")))
        probs = bb.emit(relax.op.astype(bb.emit(relax.op.nn.softmax(scaled, axis=-1)), dtype))
        out = bb.emit(relax.op.matmul(probs, v, out_dtype="float32"))
        out_dtype = str(tvm_api.expr_type(call).dtype)
        return relax.op.reshape(bb.emit(relax.op.astype(out, out_dtype)), (batch, q_len, 1, head_dim))

    return passes.call_rewrite_pass("relax.nn.attention", split, "SplitSingleHeadAttention")


def keep_attention_attrs(transform, mod):
    """``transform(mod)`` with every ``nn.attention``'s scale and causal mask as they were before it: TVM's
    ``ToMixedPrecision`` rebuilds the float16 call without its attributes (scale and causal mask dropped: CLIP's
    attention silently stopped being causal). Calls are matched in visit order, which the transform keeps."""
    from tvm import relax

    attrs = []

    def record(_mutator, call):
        attrs.append((call.attrs.scale, call.attrs.causal_mask))

    passes.call_rewrite_pass("relax.nn.attention", record, "RecordAttentionAttrs")(mod)
    out = transform(mod)
    remaining = iter(attrs)

    def restore(_mutator, call):
        scale, causal = next(remaining)
        return relax.op.nn.attention(*call.args[:3], scale=scale, causal_mask=causal)

    out = passes.call_rewrite_pass("relax.nn.attention", restore, "RestoreAttentionAttrs")(out)
    if next(remaining, None) is not None:
        raise RuntimeError("an nn.attention call disappeared in a transform; its attributes cannot be restored")
    return out
