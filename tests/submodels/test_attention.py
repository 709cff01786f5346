"""FusedAttnProcessor: diffusers' attention with one ``websd::attention`` op, numerically the same; the op
survives torch.export and imports as Relax ``nn.attention`` (float32 and, through ToMixedPrecision, float16)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.webgpu import flash_attention
from pipeline.toolchain import tvm_api
from pipeline.submodels.attention import FusedAttnProcessor


def _attention(kind):
    import torch
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    if kind == "spatial":  # the VAE's kind: NCHW input, group norm, residual
        attn = Attention(query_dim=32, heads=1, dim_head=32, norm_num_groups=8, residual_connection=True,
                         bias=True, upcast_softmax=True, _from_deprecated_attn_block=True).eval()
        return attn, torch.randn(2, 32, 8, 8), None
    attn = Attention(query_dim=32, heads=4, dim_head=8, cross_attention_dim=16 if kind == "cross" else None).eval()
    return attn, torch.randn(2, 64, 32), (torch.randn(2, 7, 16) if kind == "cross" else None)


@pytest.mark.parametrize("kind", ["self", "cross", "spatial"])
def test_fused_attention_matches_eager(kind):
    import torch
    from diffusers.models.attention_processor import AttnProcessor

    attn, x, ctx = _attention(kind)
    attn.set_processor(AttnProcessor())
    with torch.no_grad():
        eager = attn(x, encoder_hidden_states=ctx)
    fused = FusedAttnProcessor()
    attn.set_processor(fused)
    with torch.no_grad():
        got = attn(x, encoder_hidden_states=ctx)
    assert fused.decisions[0]["fused"] and fused.decisions[0]["key_tokens"] == (7 if kind == "cross" else 64)
    assert got.shape == eager.shape and torch.allclose(got, eager, atol=1e-5)


def test_a_masked_layer_keeps_the_eager_processor():
    import torch

    attn, x, _ = _attention("self")
    fused = FusedAttnProcessor()
    attn.set_processor(fused)
    with torch.no_grad():
        attn(x, attention_mask=torch.zeros(2, 1, 64))
    assert fused.decisions == [{"fused": False}]


@pytest.mark.parametrize("kind", ["cross", "spatial"])
def test_the_op_imports_as_one_nn_attention_and_builds_on_cpu(kind):
    """Through torch.export, TVM's importer (with pipeline.webgpu.flash_attention's converter) and the llvm build (what
    verify runs): the same values as PyTorch; ToMixedPrecision (float16 builds) takes it too."""
    import torch
    import tvm
    from tvm import relax

    attn, x, ctx = _attention(kind)
    attn.set_processor(FusedAttnProcessor())
    args = (x,) if ctx is None else (x, ctx)
    with torch.no_grad():
        want = attn(*args).numpy()
        ep = torch.export.export(attn, args)
    mod = tvm_api.import_exported_program(ep, flash_attention.CONVERTERS)
    mod, weights = relax.frontend.detach_params(mod)
    assert mod.script().count("R.nn.attention(") == 1
    relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
    lib = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(lib, tvm.cpu())
    got = vm["main"](*(tvm_api.cpu_tensor(a.numpy()) for a in args), *weights["main"]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def _clip_text(implementation):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=99, max_position_embeddings=16)
    return CLIPTextModel._from_config(config, attn_implementation=implementation).eval()


def test_clip_text_attention_is_one_causal_op_per_layer():
    """transformers' CLIP with the ``websd`` implementation: eager's values, and each layer one causal
    ``nn.attention`` after import, whose llvm build gives PyTorch's values."""
    import torch
    import tvm
    from tvm import relax

    from pipeline.submodels.attention import register_transformers_attention

    ids = torch.randint(0, 99, (2, 16), generator=torch.Generator().manual_seed(1))
    eager, fused = _clip_text("eager"), _clip_text(register_transformers_attention())
    fused.load_state_dict(eager.state_dict())
    with torch.no_grad():
        want = eager(input_ids=ids).last_hidden_state
        got = fused(input_ids=ids).last_hidden_state
        ep = torch.export.export(fused, (ids,))
    assert torch.allclose(got, want, atol=1e-5)
    mod = tvm_api.import_exported_program(ep, flash_attention.CONVERTERS)
    mod, weights = relax.frontend.detach_params(mod)
    assert mod.script().count('causal_mask="TopLeft"') == 2
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    out = vm["main"](tvm_api.cpu_tensor(ids.numpy()), *weights["main"])
    hidden = out if hasattr(out, "numpy") else out[0]  # the model returns (last hidden state, pooled)
    np.testing.assert_allclose(hidden.numpy(), want.numpy(), atol=1e-5)
