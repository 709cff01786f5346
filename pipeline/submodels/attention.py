"""Attention for tracing: one op of ours per attention layer, ``websd::attention``, fused into one kernel.

PyTorch's scaled-dot-product attention decomposes, in torch.export, into matmul + softmax + matmul, and the
eager processor is the same ops: a 2x8x4096x4096 score matrix at SD v1.5's full resolution (512 MiB in float16,
over WebGPU's 128 MiB binding limit) and ~800 dispatches per UNet call once sliced into heads to fit. So the
processor traces attention as one custom op, ``websd::attention(q, k, v, scale)`` on (batch, tokens, heads,
head_dim) tensors, which the compile stage imports as Relax ``nn.attention`` and, for WebGPU, builds as one
flash-attention kernel per layer (pipeline.webgpu.flash_attention). Its PyTorch implementation is PyTorch's SDPA.
diffusers models (UNet, VAE) take ``FusedAttnProcessor``; transformers ones (CLIP) the ``websd`` attention
implementation (``register_transformers_attention``).
"""
from __future__ import annotations

import functools


@functools.cache
def attention_op():
    """``torch.ops.websd.attention``, registered on first use (tracing, and loading a trace: pipeline.model.trace)."""
    import torch

    # the schema spelled out: this module's annotations are strings (``from __future__ import annotations``)
    @torch.library.custom_op("websd::attention", mutates_args=(),
                             schema="(Tensor q, Tensor k, Tensor v, float scale, bool causal=False) -> Tensor")
    def attention(q, k, v, scale, causal=False):
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale, is_causal=causal)
        return out.transpose(1, 2).contiguous()

    @attention.register_fake
    def _(q, k, v, scale, causal=False):
        return q.new_empty((*q.shape[:3], v.shape[3]))

    return torch.ops.websd.attention.default


class FusedAttnProcessor:
    """diffusers attention processor: diffusers' ``AttnProcessor`` math with the scores, softmax and weighted sum
    as one ``websd::attention`` op. A layer it does not cover (a mask, q/k norms, a spatial norm) gets diffusers'
    eager ``AttnProcessor``; ``decisions`` records each traced call (for the trace report)."""

    def __init__(self):
        self.decisions: list[dict] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        from diffusers.models.attention_processor import AttnProcessor

        plain = (attention_mask is not None or getattr(attn, "spatial_norm", None) is not None
                 or getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None)
        out, shape = (AttnProcessor()(attn, hidden_states, encoder_hidden_states, attention_mask, temb), None) \
            if plain else _fused_attention(attn, hidden_states, encoder_hidden_states)
        self.decisions.append({"fused": not plain, **(shape or {})})
        return out


def _fused_attention(attn, hidden_states, encoder_hidden_states):
    """diffusers' AttnProcessor without a mask, its attention one ``websd::attention`` call; returns (output,
    the shapes for the record)."""
    residual = hidden_states
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
    batch, q_len, inner = query.shape
    head_dim = inner // attn.heads

    def heads(x):  # (batch, tokens, heads * head_dim) -> (batch, tokens, heads, head_dim): a free view
        return x.reshape(batch, x.shape[1], attn.heads, x.shape[2] // attn.heads)

    out = attention_op()(heads(query), heads(key), heads(value), float(attn.scale))
    hidden_states = out.reshape(batch, q_len, inner)
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    shape = {"query_tokens": q_len, "key_tokens": key.shape[1], "heads": attn.heads, "head_dim": head_dim}
    return hidden_states / attn.rescale_output_factor, shape


# the transformers attention implementation (``attn_implementation``) of CLIP's text encoder, see hf.load_component
TRANSFORMERS_IMPLEMENTATION = "websd"


@functools.cache
def register_transformers_attention() -> str:
    """Register ``websd`` with transformers: attention as one ``websd::attention`` op, causal where the model says
    so, and no mask tensor (the masking interface returns none; the causal mask is the op's). The text encoder's
    only mask is its causal one: the clip wrapper passes no padding mask. Returns the implementation's name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, is_causal=None, **kwargs):
        if attention_mask is not None or dropout:
            raise ValueError("websd attention takes no mask tensor and no dropout")
        causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
        # (batch, heads, tokens, head_dim) in; (batch, tokens, heads, head_dim) out, as transformers' eager one
        out = attention_op()(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), float(scaling),
                             causal)
        return out, None

    AttentionInterface.register(TRANSFORMERS_IMPLEMENTATION, attention)
    AttentionMaskInterface.register(TRANSFORMERS_IMPLEMENTATION, lambda *args, **kwargs: None)
    return TRANSFORMERS_IMPLEMENTATION
