"""Stable Diffusion 2.1's architecture (768x768, v-prediction; configs written out here) with random weights.

OpenCLIP ViT-H text encoder (penultimate layer), linear projections and a head count per block in the UNet, the
SD 2.x tokenizer (pads with "!"): see sd2_layout. Real shapes, random weights: it measures build time, download size
and buffer limits of a 768x768 build without the real weights.
"""
from . import sd2_layout
from .family import ModelFamily, PageDefaults, TokenizerSettings
from .schedules import SD1_SCHEDULER

# SD 2.1 (768)'s noise schedule: SD's betas with v-prediction (the model predicts v = alpha * eps - sigma * x0),
# as a DPMSolverMultistepScheduler config like SD1_SCHEDULER.
SCHEDULER = (SD1_SCHEDULER[0], {**SD1_SCHEDULER[1], "prediction_type": "v_prediction"})
DEFAULTS = PageDefaults(steps=25, guidance=7.5, scheduler="dpm++2m")

FAMILY = ModelFamily(module=__name__, components={
    "text_encoder": sd2_layout.TEXT_ENCODER,
    "unet": sd2_layout.unet(sample_size=96, upcast_attention=True),
    "vae": sd2_layout.VAE,
}, scheduler=SCHEDULER, defaults=DEFAULTS, tokenizer=TokenizerSettings(pad_token="!"))
