"""A Latent Consistency Model of SD v1.5's layout (LCM_Dreamshaper_v7's architecture) with random weights.

SD v1.5's components with the UNet's guidance embedding (``time_cond_proj_dim`` 256: the guidance scale enters as an
embedding, so the UNet runs at batch 1 with no negative prompt) and LCM's scheduler: 4 steps by default.
"""
from . import sd15_random
from .family import ModelFamily, PageDefaults

# LCM's scheduler_config.json (SimianLuo/LCM_Dreamshaper_v7's): consistency sampling over a subset of a 50-step
# distillation schedule, SD's betas.
SCHEDULER = ("diffusers.LCMScheduler", {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "original_inference_steps": 50, "set_alpha_to_one": True, "steps_offset": 1,
    "timestep_spacing": "leading", "timestep_scaling": 10.0, "clip_sample": False, "trained_betas": None,
})
DEFAULTS = PageDefaults(steps=4, guidance=8.0, scheduler="lcm")

_cls, _unet = sd15_random.FAMILY.components["unet"]
FAMILY = ModelFamily(module=__name__, components={
    **sd15_random.FAMILY.components, "unet": (_cls, {**_unet, "time_cond_proj_dim": 256}),
}, scheduler=SCHEDULER, defaults=DEFAULTS)
