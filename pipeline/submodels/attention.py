"""Attention for tracing: eager (matmul + softmax) everywhere, sliced where the score matrix would be big.

PyTorch's fused scaled-dot-product attention decomposes into WGSL that validators reject, so the traced graph
must use the plain processor. At 512x512 the full-resolution self-attention of SD v1.5 has a
2x8x4096x4096 score matrix (512 MiB in float16, 1 GiB in float32) while WebGPU's default max storage buffer
binding is 128 MiB. This processor decides per call, from the (static) shapes seen while tracing, whether to
split the batch*heads dimension into slices whose float32 scores fit ``max_score_bytes``.
"""
from __future__ import annotations

# float32 scores of one slice; float16 builds halve it. 64 MiB leaves room under the 128 MiB binding limit.
DEFAULT_MAX_SCORE_BYTES = 64 << 20


def slice_size(batch_heads: int, query_tokens: int, key_tokens: int, max_score_bytes: int) -> int:
    """The largest divisor of ``batch_heads`` whose float32 score slice fits ``max_score_bytes`` (at least 1)."""
    per_head = query_tokens * key_tokens * 4
    fits = [s for s in range(1, batch_heads + 1) if batch_heads % s == 0 and s * per_head <= max_score_bytes]
    return max(fits, default=1)


class BoundedAttnProcessor:
    """diffusers attention processor: diffusers' eager ``AttnProcessor`` when the scores fit, else the same
    computation on slices of the batch*heads dimension, joined with ``torch.cat``.

    (diffusers' own ``SlicedAttnProcessor`` writes slices into a zeros tensor in place; torch.export turns that
    into ``slice_scatter``, whose integer arguments ``relax.transform.ToMixedPrecision`` rejects.)
    """

    def __init__(self, max_score_bytes: int = DEFAULT_MAX_SCORE_BYTES):
        self.max_score_bytes = max_score_bytes
        self.decisions: list[dict] = []  # one per traced call, for the trace report

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        from diffusers.models.attention_processor import AttnProcessor

        batch = hidden_states.shape[0]
        query_tokens = (hidden_states.shape[2] * hidden_states.shape[3] if hidden_states.ndim == 4
                        else hidden_states.shape[1])
        key_tokens = query_tokens if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        batch_heads = batch * attn.heads
        if batch_heads * query_tokens * key_tokens * 4 <= self.max_score_bytes:
            size = batch_heads
        else:
            size = slice_size(batch_heads, query_tokens, key_tokens, self.max_score_bytes)
        self.decisions.append({"query_tokens": query_tokens, "key_tokens": key_tokens,
                               "batch_heads": batch_heads, "slice": size})
        if size == batch_heads:
            return AttnProcessor()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return _sliced_attention(attn, hidden_states, encoder_hidden_states, attention_mask, size)


def _sliced_attention(attn, hidden_states, encoder_hidden_states, attention_mask, size):
    """diffusers' AttnProcessor math with the score matrix computed ``size`` batch*heads rows at a time."""
    import torch

    residual = hidden_states
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    batch, sequence_length, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
    attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    query = attn.head_to_batch_dim(query)
    key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
    value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
    outs = []
    for start in range(0, query.shape[0], size):
        end = start + size
        mask = attention_mask[start:end] if attention_mask is not None else None
        probs = attn.get_attention_scores(query[start:end], key[start:end], mask)
        outs.append(torch.bmm(probs, value[start:end]))
    hidden_states = attn.batch_to_head_dim(torch.cat(outs))
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor
