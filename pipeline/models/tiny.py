"""A tiny Stable Diffusion (64x64 images, 8x8 latents, hidden 32) built from these configs with a fixed seed.

Small enough that every stage runs in seconds, yet it has every kind of layer the real model has (cross and self
attention, ResNet blocks, up/down sampling, group norm). The text encoder keeps CLIP's real vocabulary so the real
tokenizer's ids index it.
"""
from .family import ModelFamily

FAMILY = ModelFamily(module=__name__, cpu_verify=True, components={
    "text_encoder": ("transformers.CLIPTextModel", {
        "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
        "num_hidden_layers": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "projection_dim": 32, "bos_token_id": 49406, "eos_token_id": 49407,
        "pad_token_id": 49407,
    }),
    "unet": ("diffusers.UNet2DConditionModel", {
        "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64], "norm_num_groups": 8, "cross_attention_dim": 32, "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    }),
    "vae": ("diffusers.AutoencoderKL", {
        "sample_size": 64, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
        "block_out_channels": [8, 16, 32, 32], "norm_num_groups": 8, "scaling_factor": 0.18215,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    }),
})
