"""BoundedAttnProcessor: sliced where the score matrix would be too big, numerically the same attention."""
from __future__ import annotations

import pytest

from pipeline.submodels.attention import DEFAULT_MAX_SCORE_BYTES, BoundedAttnProcessor, slice_size


def test_slice_size_keeps_sd15_full_resolution_scores_within_budget():
    # SD v1.5 at 512x512: batch 2 x 8 heads, 64x64 latent tokens -> one 4096x4096 float32 slice = 64 MiB
    assert slice_size(16, 4096, 4096, DEFAULT_MAX_SCORE_BYTES) == 1
    assert slice_size(16, 1024, 1024, DEFAULT_MAX_SCORE_BYTES) == 16
    assert slice_size(12, 2000, 2000, 3 * 2000 * 2000 * 4) == 3  # a divisor of batch*heads
    assert slice_size(5, 100, 100, 1) == 1


@pytest.mark.parametrize("kind", ["self", "cross", "spatial"])
def test_sliced_attention_matches_eager(kind):
    import torch
    from diffusers.models.attention_processor import Attention, AttnProcessor

    torch.manual_seed(0)
    if kind == "spatial":  # the VAE's kind: NCHW input, group norm, residual
        attn = Attention(query_dim=32, heads=4, dim_head=8, norm_num_groups=8, residual_connection=True,
                         bias=True, upcast_softmax=True, _from_deprecated_attn_block=True).eval()
        x, ctx, queries = torch.randn(2, 32, 8, 8), None, 64
    else:
        attn = Attention(query_dim=32, heads=4, dim_head=8, cross_attention_dim=16 if kind == "cross" else None)
        attn.eval()
        x, ctx, queries = torch.randn(2, 64, 32), (torch.randn(2, 7, 16) if kind == "cross" else None), 64
    attn.set_processor(AttnProcessor())
    with torch.no_grad():
        eager = attn(x, encoder_hidden_states=ctx)
    keys = 7 if kind == "cross" else queries
    bounded = BoundedAttnProcessor(max_score_bytes=2 * queries * keys * 4)  # room for 2 of the 8 batch*heads
    attn.set_processor(bounded)
    with torch.no_grad():
        sliced = attn(x, encoder_hidden_states=ctx)
    assert bounded.decisions == [{"query_tokens": queries, "key_tokens": keys, "batch_heads": 8, "slice": 2}]
    assert sliced.shape == eager.shape and torch.allclose(sliced, eager, atol=1e-5)


def test_sliced_attention_imports_into_float16_relax():
    """No slice_scatter in the traced graph: ToMixedPrecision must accept it."""
    import torch
    from diffusers.models.attention_processor import Attention
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    attn = Attention(query_dim=32, heads=4, dim_head=8).eval()
    attn.set_processor(BoundedAttnProcessor(max_score_bytes=1))
    with torch.no_grad():
        ep = torch.export.export(attn, (torch.randn(2, 16, 32),))
    mod = from_exported_program(ep, keep_params_as_input=True, unwrap_unit_return_tuple=True)
    mod, _ = relax.frontend.detach_params(mod)
    assert "slice_scatter" not in mod.script()
    relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
