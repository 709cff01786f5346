"""The reference the page is compared with: diffusers' StableDiffusionPipeline on the same weights, and the metrics.

Used by the Chromium end-to-end test (CPU) and by the GPU benchmark (benchmarks/bench_webgpu.py, CUDA).

The page's VAE entry returns ``clamp((image / 2 + 0.5) * 255, 0, 255)`` as float32 (NHWC), not rounded; diffusers
with ``output_type="np"`` returns ``clamp(image / 2 + 0.5, 0, 1)`` (NHWC float32). So the like-for-like comparison is
page pixels vs reference * 255, both unrounded floats on the 0..255 scale. (The canvas holds those floats rounded
to bytes; comparing bytes would add up to 0.5 of rounding noise and hide nothing else.)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SCHEDULER_CLASSES = {"dpm++2m": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler",
                     "euler-a": "EulerAncestralDiscreteScheduler", "lcm": "LCMScheduler"}


def load_reference_pipeline(model_dir: Path, tokenizer_dir: Path | None, device: str = "cpu", dtype: str = "float32",
                            loras: list[tuple[Path, float]] = (), vae_tile: int | None = None):
    """A StableDiffusionPipeline (float32 on the CPU by default) from a diffusers folder (text_encoder/, unet/,
    vae/, scheduler/), or diffusers' LatentConsistencyModelPipeline for an LCM (its scheduler is an LCMScheduler),
    and the CLIP tokenizer files the site serves (so both sides tokenize with the same vocabulary and merges; None: no
    tokenizer, for weight checks). On CUDA, float32 means float32: TF32 matrix math is turned off. ``loras`` (file,
    scale) are fused as diffusers' documentation does it: ``load_lora_weights`` each, ``set_adapters`` with the
    scales, ``fuse_lora``, ``unload_lora_weights``. ``vae_tile`` (manifest.json ``vae_tile``: the site's VAE decodes
    tiles of that many pixels) turns on diffusers' VAE tiling with the same tile, which the page's decode equals."""
    import diffusers
    import torch
    import transformers
    from diffusers import AutoencoderKL, LatentConsistencyModelPipeline, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from pipeline.page.tokenizer import clip_tokenizer

    for library in (diffusers, transformers):  # progress bars would bury the report the test prints
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    model_dir = Path(model_dir)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    f32 = {"torch_dtype": torch.float32, "local_files_only": True}
    scheduler_class = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    lcm = scheduler_class == SCHEDULER_CLASSES["lcm"]
    pipe = (LatentConsistencyModelPipeline if lcm else StableDiffusionPipeline)(
        vae=AutoencoderKL.from_pretrained(model_dir / "vae", **f32),
        text_encoder=CLIPTextModel.from_pretrained(model_dir / "text_encoder", dtype=torch.float32,
                                                   local_files_only=True),
        tokenizer=clip_tokenizer(source=Path(tokenizer_dir)) if tokenizer_dir is not None else None,
        unet=UNet2DConditionModel.from_pretrained(model_dir / "unet", **f32),
        scheduler=getattr(diffusers, scheduler_class).from_pretrained(model_dir / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    if loras:
        names = [f"lora{i}" for i in range(len(loras))]
        for name, (path, _) in zip(names, loras):
            pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])
        pipe.fuse_lora(adapter_names=names)
        pipe.unload_lora_weights()
    if vae_tile:
        pipe.vae.enable_tiling()
        pipe.vae.tile_sample_min_size = vae_tile
        pipe.vae.tile_latent_min_size = vae_tile // pipe.vae_scale_factor
    return pipe.to(device=device, dtype=getattr(torch, dtype))


def reference_image(pipe, *, scheduler: str, prompt: str, negative_prompt: str, steps: int, guidance: float,
                    width: int, height: int, latents: np.ndarray | None = None,
                    seed: int | None = None) -> np.ndarray:
    """diffusers' image as float32 H x W x 3 on the page's 0..255 scale (see module doc).

    ``latents`` (1 x C x h x w, before init_noise_sigma, as the page takes them) and/or ``seed`` (a CPU
    torch.Generator, which the page's seeded noise reproduces: the initial latents unless given, then an ancestral
    scheduler's noise). ``guidance`` <= 1 is diffusers' no-guidance path: the prompt alone, batch 1. The scheduler is built from the
    model's own scheduler config, as the page builds it from manifest.json's copy of that config."""
    import diffusers
    import torch

    pipe.scheduler = getattr(diffusers, SCHEDULER_CLASSES[scheduler]).from_config(pipe.scheduler.config)
    kwargs = {}
    if latents is not None:
        kwargs["latents"] = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(
            pipe.device, pipe.unet.dtype)
    if seed is not None:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    if not kwargs:
        raise ValueError("reference_image needs latents or a seed")
    if type(pipe).__name__ != "LatentConsistencyModelPipeline":  # LCM's takes no negative prompt
        kwargs["negative_prompt"] = negative_prompt
    with torch.no_grad():
        out = pipe(prompt=prompt, num_inference_steps=steps,
                   guidance_scale=guidance, height=height, width=width, output_type="np", **kwargs)
    return (np.asarray(out.images[0], dtype=np.float32) * 255).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two images on the 0..peak scale (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
