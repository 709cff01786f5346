"""Stable Diffusion v1.5's architecture (configs written out here, no model hub) with random weights.

Same shapes, parameter counts and kernels as the real model, so it measures build time, download size and
buffer limits of a 512x512 build without needing the real weights.
"""

from .family import ModelFamily

FAMILY = ModelFamily(module=__name__, components={
    "text_encoder": ("transformers.CLIPTextModel", {
        "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
        "num_hidden_layers": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }),
    "unet": ("diffusers.UNet2DConditionModel", {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280], "norm_num_groups": 32, "norm_eps": 1e-5,
        "cross_attention_dim": 768, "attention_head_dim": 8, "act_fn": "silu", "center_input_sample": False,
        "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "mid_block_scale_factor": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }),
    "vae": ("diffusers.AutoencoderKL", {
        "sample_size": 512, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu",
        "scaling_factor": 0.18215,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    }),
})
