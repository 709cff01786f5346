"""SD-Turbo's architecture (SD 2.1-base layout, 512x512; configs written out here) with random weights.

An adversarially distilled SD 2.1-base: 1-4 steps from t = 999 (trailing spacing), no classifier-free guidance,
so its UNet is traced and compiled at batch 1 and runs once per step. Real shapes, random weights: it measures
build time, download size and per-step speed of the one-step model without needing the real weights.
"""
from . import sd2_layout
from .family import ModelFamily, PageDefaults, TokenizerSettings

# SD-Turbo's scheduler_config.json: SD's noise schedule, Euler with trailing timestep spacing (its 1-4 steps start
# at t = 999, where it was distilled), epsilon prediction.
SCHEDULER = ("diffusers.EulerDiscreteScheduler", {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "trailing", "interpolation_type": "linear",
    "use_karras_sigmas": False, "timestep_type": "discrete", "trained_betas": None,
})
DEFAULTS = PageDefaults(steps=1, guidance=0.0, scheduler="euler-a")

FAMILY = ModelFamily(module=__name__, components={
    "text_encoder": sd2_layout.TEXT_ENCODER,
    "unet": sd2_layout.unet(sample_size=64, upcast_attention=False),
    "vae": sd2_layout.VAE,
}, scheduler=SCHEDULER, defaults=DEFAULTS, tokenizer=TokenizerSettings(pad_token="!"))
