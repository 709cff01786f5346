"""A tiny SD-Turbo (64x64 images) for CI: SD 2.x's layout in small (GELU text encoder, linear projections, a head
count per block), SD-Turbo's trailing-spaced Euler schedule, and no classifier-free guidance (batch-1 UNet)."""
from . import sd2_layout, sd_turbo_random
from .family import ModelFamily

FAMILY = ModelFamily(module=__name__, cpu_verify=True, components={
    "text_encoder": sd2_layout.TINY_TEXT_ENCODER,
    "unet": sd2_layout.TINY_UNET,
    "vae": sd2_layout.TINY_VAE,
}, scheduler=sd_turbo_random.SCHEDULER, defaults=sd_turbo_random.DEFAULTS, tokenizer=sd_turbo_random.FAMILY.tokenizer)
