"""Stable Diffusion 2.x's component configs (diffusers' layout of stabilityai's checkpoints), shared by the SD 2.x
families: SD 2.1 (768, v-prediction), SD 2.1-base and SD-Turbo (512, epsilon).

What differs from SD 1.x:
  - the text encoder is OpenCLIP ViT-H/14 in transformers' ``CLIPTextModel`` layout: hidden 1024, 16 heads, GELU,
    and 23 layers, not 24: SD 2.x conditions on the penultimate layer's output, and diffusers' conversion drops the
    last layer, so the model's last hidden state (after its final layer norm) IS that output;
  - the UNet's transformer blocks use linear projections in and out (``use_linear_projection``), cross-attend to
    1024-wide text states, and have a head count per block (``attention_head_dim``, which diffusers' SD 2.x
    configs use as the number of heads: [5, 10, 20, 20] heads of 64 channels).
The VAE is SD 1.x's.
"""
from __future__ import annotations

DOWN_BLOCKS = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
UP_BLOCKS = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

TEXT_ENCODER = ("transformers.CLIPTextModel", {
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
    "num_hidden_layers": 23, "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 512, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
})

VAE = ("diffusers.AutoencoderKL", {
    "sample_size": 768, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu", "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
})


def unet(sample_size: int, upcast_attention: bool) -> tuple[str, dict]:
    """SD 2.x's UNet: ``sample_size`` 96 (768 px, SD 2.1) or 64 (512 px, SD 2.1-base, SD-Turbo)."""
    return ("diffusers.UNet2DConditionModel", {
        "sample_size": sample_size, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280], "norm_num_groups": 32, "norm_eps": 1e-5,
        "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True,
        "upcast_attention": upcast_attention, "act_fn": "silu", "center_input_sample": False,
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "mid_block_scale_factor": 1,
        "down_block_types": DOWN_BLOCKS, "up_block_types": UP_BLOCKS,
    })


# A tiny model of the same layout (CI): GELU text encoder, linear projections, a head count per block.
TINY_TEXT_ENCODER = ("transformers.CLIPTextModel", {
    "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
    "num_hidden_layers": 2, "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 32, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
})
TINY_UNET = ("diffusers.UNet2DConditionModel", {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": [32, 64],
    "norm_num_groups": 8, "cross_attention_dim": 32, "attention_head_dim": [2, 4], "use_linear_projection": True,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
})
TINY_VAE = ("diffusers.AutoencoderKL", {
    "sample_size": 64, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "block_out_channels": [8, 16, 32, 32], "norm_num_groups": 8, "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
})
