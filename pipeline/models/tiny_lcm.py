"""A tiny LCM (64x64 images) for CI: the tiny SD v1.x with a guidance embedding in its UNet and LCM's scheduler."""
from . import lcm_random, tiny
from .family import ModelFamily

_cls, _unet = tiny.FAMILY.components["unet"]
FAMILY = ModelFamily(module=__name__, cpu_verify=True, components={
    **tiny.FAMILY.components, "unet": (_cls, {**_unet, "time_cond_proj_dim": 32}),
}, scheduler=lcm_random.SCHEDULER, defaults=lcm_random.DEFAULTS)
