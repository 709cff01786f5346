"""A tiny SD 2.1 (64x64 images) for CI: SD 2.x's layout in small, v-prediction, classifier-free guidance, and the
SD 2.x tokenizer (pads with "!")."""
from . import sd2_layout, sd21_random
from .family import ModelFamily

FAMILY = ModelFamily(module=__name__, cpu_verify=True, components={
    "text_encoder": sd2_layout.TINY_TEXT_ENCODER,
    "unet": sd2_layout.TINY_UNET,
    "vae": sd2_layout.TINY_VAE,
}, scheduler=sd21_random.SCHEDULER, defaults=sd21_random.DEFAULTS, tokenizer=sd21_random.FAMILY.tokenizer)
