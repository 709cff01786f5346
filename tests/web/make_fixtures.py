"""Reference data for the page's JavaScript unit tests (web/test/*.test.mjs), computed with the Python stack.

    python -m tests.web.make_fixtures [OUT_DIR]      # default: web/test/fixtures (git-ignored)

writes
  tokenizer/                 CLIP tokenizer files, by pipeline.page.tokenizer.write_clip_tokenizer
  tokenizer_ids.json         PROMPTS and their ids from transformers' CLIPTokenizer (padded/truncated to 77)
  tokenizer_sd2/, tokenizer_sd2_ids.json   the same with SD 2.x's settings (pads with "!")
  schedulers.json            diffusers scheduler runs: timesteps, sigmas, and every step's input and output
  randn.json                 torch.randn values for a few seeds (the page's seeded latents)
  pipeline_loop.json         diffusers' denoising loop with a stand-in UNet (seeded latents to final latents)

The JS tests read OUT_DIR from $WEBSD_FIXTURES (default web/test/fixtures); tests/web/test_web_js.py runs both.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.fsutil import atomic_path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "web" / "test" / "fixtures"

# Varied on purpose: case, whitespace, punctuation, digits, contractions, accents and combining marks (NFC),
# scripts without spaces, emoji and other non-BMP characters, special-token text, and prompts longer than 77
# tokens (truncation) next to empty ones (all padding).
PROMPTS = [
    "a photo of an astronaut riding a horse",
    "A PHOTO OF AN ASTRONAUT RIDING A HORSE",
    "",
    "   ",
    "horse",
    "a cat, a dog; and a bird: together!",
    "masterpiece, best quality, (ultra detailed:1.2), [cinematic lighting]",
    "don't stop believin' - it's what we're told, you'll see, I'd say, I've been, I'm here",
    "rock'n'roll 'quoted' \"double quoted\" `backticks`",
    "3.14159 and 2,718 and 1e-5 and 42 and 007 and 1234567890",
    "1920x1080, 4k, 8K UHD, f/1.8, 35mm, ISO-100",
    "café crème brûlée à la mode, naïve façade",
    "cafe\u0301 cre\u0300me",  # decomposed accents: NFC must compose them
    "東京タワーの夜景, 美しい",
    "上海的夜景，非常美丽。",
    "서울의 밤 풍경",
    "Москва зимой, красная площадь",
    "Ελληνικά ΟΔΟΣ ΣΟΦΙΑΣ",
    "مدينة عربية في الليل",
    "हिन्दी में एक वाक्य",
    "emoji 😀🐎🚀🌕 and flags 🇯🇵 and skin tone 👍🏽",
    "zero\u200bwidth\u200bspace and non\u00a0breaking and tab\there and new\nline",
    "multiple     spaces\t\t\tand\n\n\nnewlines",
    "full-width ＡＢＣ １２３ and math 𝔸𝔹ℂ and ligature ﬁ",
    "İstanbul straße ǅ ß ẞ",
    "<|startoftext|>a painting<|endoftext|> of <|endoftext|>",
    "<|endoftext|>",
    "html &amp; entities &lt;b&gt; and <b>tags</b>",
    "https://example.com/path?query=1&x=y#frag user@example.com",
    "snake_case camelCase kebab-case PascalCase CONSTANT_CASE",
    "!!!???...,,,;;;:::---___***///\\\\|||",
    "$100 €50 £20 ¥1000 ₹500 ©®™ §¶ °C ±",
    "a~b^c|d{e}f[g]h<i>j",
    "oil painting of a fox in a snowy forest, by a famous artist, trending on artstation",
    "portrait of a woman, 85mm, bokeh, golden hour, highly detailed skin, photorealistic",
    "a futuristic city at night, neon lights, rain, cyberpunk, blade runner style",
    "low poly 3d render of an isometric island with palm trees",
    "watercolor illustration of a lighthouse on a cliff, soft pastel colors",
    "ugly, blurry, low quality, deformed, extra fingers, watermark, text",
    "The quick brown fox jumps over the lazy dog.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "x" * 300,
    "a, " * 80,
    "one two three four five six seven eight nine ten " * 10,
    " ".join(str(i) for i in range(100)),
    "a highly detailed matte painting of a castle on a hill surrounded by a river and a forest with mountains "
    "in the background under a dramatic sky at sunset with birds flying and a small village in the valley "
    "and people walking on the road and horses and carts, concept art, by several artists, octane render",
    "trailing space ",
    " leading space",
    "MiXeD CaSe WoRdS",
    "hyphen-ated, slash/separated, dot.separated, under_scored",
    "1st 2nd 3rd 4th 21st century 1990s",
    "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ",
    "\u00bd \u2153 \u00b2 \u2460 \u2167",
    "cats' toys and the dogs's bones, it''s",
]


# fixture name -> pad token: SD v1.x's tokenizer and SD 2.x's (pipeline.models.family.TokenizerSettings)
TOKENIZERS = {"tokenizer": "<|endoftext|>", "tokenizer_sd2": "!"}


def write_tokenizer_fixture(out: Path) -> None:
    from pipeline.page.tokenizer import clip_tokenizer, encode_prompts, write_clip_tokenizer

    for name, pad in TOKENIZERS.items():
        write_clip_tokenizer(out / name, pad_token=pad)
        # the reference: transformers' CLIPTokenizer as diffusers loads it from the folder just written
        ids = encode_prompts(clip_tokenizer(source=out / name), PROMPTS)
        _write_json(out / f"{name}_ids.json", {"prompts": PROMPTS, "pad_token": pad, "input_ids": ids})


# Stable Diffusion v1.5's scheduler_config.json (a PNDM config; the pipeline swaps schedulers with from_config).
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# (scheduler, steps, config overrides): the page's defaults first, then the branches of each port.
SCHEDULER_CASES = [
    ("dpm++2m", 20, {}),
    ("dpm++2m", 10, {}),  # < 15 steps: lower-order final and second-to-last steps
    ("dpm++2m", 50, {}),
    ("dpm++2m", 1, {}),
    ("dpm++2m", 12, {"solver_order": 3}),
    ("dpm++2m", 20, {"solver_order": 3}),
    ("dpm++2m", 20, {"solver_type": "heun"}),
    ("dpm++2m", 15, {"timestep_spacing": "leading"}),
    ("dpm++2m", 25, {"timestep_spacing": "trailing"}),
    ("dpm++2m", 20, {"prediction_type": "v_prediction"}),
    ("dpm++2m", 8, {"final_sigmas_type": "sigma_min"}),
    ("dpm++2m", 20, {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}),
    ("euler", 20, {}),
    ("euler", 30, {}),
    ("euler", 15, {"timestep_spacing": "leading"}),
    ("euler", 25, {"timestep_spacing": "trailing"}),
    ("euler", 20, {"prediction_type": "v_prediction"}),
    # SD-Turbo's schedule (pipeline.models.sd_turbo_random.SCHEDULER): trailing spacing, 1-4 steps
    ("euler-a", 1, {"timestep_spacing": "trailing"}),
    ("euler-a", 4, {"timestep_spacing": "trailing"}),
    ("euler-a", 20, {}),
    ("euler-a", 15, {"timestep_spacing": "leading"}),
    ("euler-a", 10, {"prediction_type": "v_prediction"}),
    ("euler", 1, {"timestep_spacing": "trailing"}),
    ("euler", 1, {}),  # linspace with one step: numpy gives [0]
    # LCM (pipeline.models.lcm_random.SCHEDULER): 1-8 steps of the 50-step distillation schedule
    ("lcm", 4, {"set_alpha_to_one": True, "original_inference_steps": 50, "timestep_scaling": 10.0}),
    ("lcm", 1, {"set_alpha_to_one": True}),
    ("lcm", 3, {"set_alpha_to_one": True}),
    ("lcm", 8, {}),
    ("lcm", 6, {"prediction_type": "v_prediction", "clip_sample": True}),
]
NOISING = ("euler-a", "lcm")  # schedulers that draw fresh noise each step
# the ancestral scheduler's per-step noise: torch.Generator().manual_seed(NOISE_SEED), passed to every step; the
# JS port draws the same stream (web/src/random.js normalStream)
NOISE_SEED = 99
LATENT_SHAPE = (1, 4, 4, 4)


def scheduler_runs() -> list[dict]:
    """Full diffusers runs on random model outputs: the JS port must follow the same trajectory."""
    import numpy as np
    import torch
    from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                           LCMScheduler)

    classes = {"dpm++2m": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler,
               "euler-a": EulerAncestralDiscreteScheduler, "lcm": LCMScheduler}
    rng = np.random.default_rng(1234)
    runs = []
    for name, steps, overrides in SCHEDULER_CASES:
        config = {**SD15_SCHEDULER, **overrides}
        sched = classes[name].from_config(config)
        sched.set_timesteps(steps)
        ancestral = name in NOISING
        step_kwargs = {"generator": torch.Generator().manual_seed(NOISE_SEED)} if ancestral else {}
        init_sigma = float(sched.init_noise_sigma)
        sample = torch.from_numpy(rng.standard_normal(LATENT_SHAPE, dtype=np.float32)) * sched.init_noise_sigma
        run = {
            "scheduler": name, "steps": steps, "config": config,
            "timesteps": [float(t) for t in sched.timesteps], "sigmas": sched.sigmas.tolist() if hasattr(sched, "sigmas") else None,  # LCM has none
            "init_noise_sigma": init_sigma, "initial_sample": sample.flatten().tolist(), "steps_data": [],
            **({"noise_seed": NOISE_SEED} if ancestral else {}),
        }
        for t in sched.timesteps:
            scaled = sched.scale_model_input(sample, t)
            model_output = torch.from_numpy(rng.standard_normal(LATENT_SHAPE, dtype=np.float32))
            sample = sched.step(model_output, t, sample, **step_kwargs).prev_sample
            run["steps_data"].append({
                "model_output": model_output.flatten().tolist(),
                "scaled_input": scaled.flatten().tolist(),
                "prev_sample": sample.flatten().tolist(),
            })
        runs.append(run)
    return runs


def pipeline_loops() -> list[dict]:
    """The denoising loop of diffusers' StableDiffusionPipeline (seeded CPU latents, init_noise_sigma,
    scale_model_input, step) with a stand-in UNet, eps = 0.5 * x_in + t / 1000, so the JS loop can be compared
    end to end without a model."""
    import torch
    from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                           LCMScheduler)

    runs = []
    turbo = {**SD15_SCHEDULER, "timestep_spacing": "trailing"}
    for name, cls, steps, seed, config in [("dpm++2m", DPMSolverMultistepScheduler, 12, 7, SD15_SCHEDULER),
                                           ("euler", EulerDiscreteScheduler, 12, 7, SD15_SCHEDULER),
                                           ("euler-a", EulerAncestralDiscreteScheduler, 12, 7, SD15_SCHEDULER),
                                           ("euler-a", EulerAncestralDiscreteScheduler, 4, 3, turbo),
                                           ("lcm", LCMScheduler, 4, 5, {**SD15_SCHEDULER, "set_alpha_to_one": True})]:
        sched = cls.from_config(config)
        sched.set_timesteps(steps)
        # one generator for the initial latents and then the ancestral noise, as the pipeline's generator=
        generator = torch.Generator().manual_seed(seed)
        step_kwargs = {"generator": generator} if name in NOISING else {}
        latents = torch.randn(LATENT_SHAPE, generator=generator) * sched.init_noise_sigma
        for t in sched.timesteps:
            x_in = sched.scale_model_input(latents, t)
            eps = 0.5 * x_in + t.to(torch.float32) / 1000
            latents = sched.step(eps, t, latents, **step_kwargs).prev_sample
        runs.append({"scheduler": name, "steps": steps, "seed": seed, "shape": list(LATENT_SHAPE),
                     "config": config, "final_latents": latents.flatten().tolist()})
    return runs


# (seed, count): SD v1.5 latents at 512x512 (1x4x64x64), tiny-model latents, a count not a multiple of 16,
# and a seed above 2**32 (PyTorch keeps its low 32 bits).
RANDN_CASES = [(0, 16384), (42, 256), (12345, 100), (2**40 + 7, 64)]
RANDN_KEEP = 600  # values stored per case: the head and the tail, enough to see every code path


def randn_cases() -> list[dict]:
    import torch

    cases = []
    for seed, n in RANDN_CASES:
        x = torch.randn(n, generator=torch.Generator().manual_seed(seed)).tolist()
        keep = RANDN_KEEP // 2
        cases.append({"seed": str(seed), "n": n, "head": x[:keep], "tail": x[-keep:] if n > keep else []})
    return cases


def _write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")


def make_fixtures(out: Path = DEFAULT_OUT) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer_fixture(out)
    _write_json(out / "schedulers.json", scheduler_runs())
    _write_json(out / "randn.json", randn_cases())
    _write_json(out / "pipeline_loop.json", pipeline_loops())


if __name__ == "__main__":
    make_fixtures(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
