"""Benchmark: a built site in the headless GPU runner (web/runner/run.mjs, Dawn) against PyTorch on the same GPU.

    .venv/bin/python benchmarks/bench_webgpu.py --site cache/site [--site another/site] [--steps 20]

For each site it runs the page's own modules through the runner (load split into download+check, shader
pipelines and weight upload; first and warm call per submodel; seconds per image), then checks the result
against diffusers on the same weights, prompt, negative prompt, guidance, scheduler and initial latents:
  * per submodel, the max abs error of the first call against the torch wrapper on the same inputs;
  * the image's PSNR and max abs pixel difference (0..255, unrounded), and the same metrics for references made
    with one input wrong (prompt, negative prompt, guidance, scheduler), which the bar must reject.
Then it times PyTorch (diffusers; float16 and float32; CUDA when present) on the same shapes, in the same run,
and writes ``webgpu-<model>-<device>.json`` and ``.md`` to --results (default benchmarks/results/).

A site whose weight shards are absent (they are too large to carry to a GPU machine) is completed first: the
embedded model is made again from its seed and sharded into the layout its tensor-cache.json records, and every
shard must match the sha256 in manifest.json (reported as ``weights_identical``).

A site with compiled variants (manifest.json ``variants``: e.g. subgroup-matrix kernels) runs with Dawn's
allow_unsafe_apis toggle (the experimental features need it). ``--variants auto`` (default) runs the fastest variant
the adapter supports, as the page would; ``--variants all`` runs each variant the adapter supports, and the default
build, as rows of their own (``<label>:<variant>``), each checked against the same bar.

Runs on the CPU too: lavapipe through Dawn and a CPU reference (the tiny model); see tests/web/test_gpu_runner.py.
"""
from __future__ import annotations

import argparse
import re
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.model import hf, shard
from pipeline import models, submodels
from pipeline.submodels import code  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.errors import WebsdError  # noqa: E402
from pipeline.fsutil import sha256_file, write_json  # noqa: E402
from pipeline.page.reference import load_reference_pipeline, max_abs_diff, psnr, reference_image  # noqa: E402

import ort_peer  # noqa: E402  (benchmarks/, this script's directory)

RUNNER = ROOT / "web" / "runner" / "run.mjs"
# Published NVIDIA H200 SXM peaks, to put achieved rates in proportion: WGSL has no tensor-core instructions, so
# the kernels' ceiling is the FP32 (CUDA core) rate; PyTorch float16 uses the tensor cores (989 TFLOP/s dense).
PEAKS = {"H200": {"fp32_tflops": 67.0, "fp16_tensor_tflops": 989.0, "hbm_tb_s": 4.8}}
PROMPT = "a photo of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
GUIDANCE = 7.5
LATENTS_SEED = 7
PSNR_MIN_DB = 30.0
# PSNR alone does not discriminate: on sd15-random a wrong negative prompt still scores 30.2 dB, a wrong guidance
# 37.6 dB and the other scheduler 44.7 dB (H200, 2026-12-01), because the image is dominated by the initial latents.
# The bar adds the largest pixel error: those wrong inputs are off by >= 9 of 255 somewhere, the right float32 image
# by 0.001 and float16 by 0.52.
MAX_ABS_DIFF = 2.0
# the noise an ancestral scheduler (Euler a, LCM) adds between steps: the runner's --seed, diffusers' generator
NOISE_SEED = 1234


SCHEDULER_NAMES = {"dpm++2m": "DPM-Solver++", "euler": "Euler", "euler-a": "Euler ancestral", "lcm": "LCM"}


def site_settings(manifest: dict, args) -> dict:
    """Steps, guidance and scheduler of a site's runs: the command line's where given, else the model's own
    (manifest.json ``defaults``: SD v1.5 20 DPM-Solver++ steps at guidance 7.5, SD-Turbo 1 Euler a step without
    guidance, ...), and whether the model uses classifier-free guidance (a batch-2 UNet) or embeds it (LCM)."""
    own = manifest.get("defaults", {"steps": 20, "guidance": GUIDANCE, "scheduler": "dpm++2m"})
    return {"steps": args.steps or own["steps"], "guidance": own["guidance"] if args.guidance is None else args.guidance,
            "scheduler": args.scheduler or own["scheduler"],
            "classifier_free": manifest.get("classifier_free", True),
            "guidance_embedding": manifest.get("guidance_embedding", False)}


def wrong_inputs(settings: dict) -> dict:
    """References made with one input wrong, each of which must fail the bar: only inputs that change the image
    (a model without guidance ignores the negative prompt and the scale; one step ends at sigma 0, so it adds no
    noise and Euler a's step is Euler's)."""
    wrong = {"prompt": {"prompt": "a red cube on a table"}}
    if settings["classifier_free"]:
        wrong["negative_prompt"] = {"negative_prompt": ""}
    if settings["classifier_free"] or settings["guidance_embedding"]:
        wrong["guidance"] = {"guidance": settings["guidance"] - 1.5}
    if settings["steps"] == 1:
        wrong["steps"] = {"steps": 2}
    else:
        wrong["scheduler"] = {"scheduler": "euler" if settings["scheduler"] != "euler" else "dpm++2m"}
    if settings["steps"] > 1 and settings["scheduler"] in ("euler-a", "lcm"):
        wrong["noise_seed"] = {"seed": NOISE_SEED + 1}
    return wrong


def site_config(manifest: dict, cache: Path):
    """The pipeline config that built a site, enough to make its embedded model's weights again and its wrappers
    (the VAE's tiling follows the size, dtype and limits profile, or the site's explicit tile)."""
    sizes = {f"model.{k}": manifest[k] for k in ("width", "height") if k in manifest}
    return load_config(cli={"model.name": manifest["model"], "model.dtype": manifest["dtype"],
                            "model.seed": manifest.get("seed", 0), "paths.cache": str(cache), **sizes,
                            "webgpu.limits": manifest.get("limits_profile", "default"),
                            "model.vae_tile": manifest.get("vae_tile") or 0})


def complete_site(site: Path, cache: Path) -> tuple[bool | None, Path]:
    """Make the absent weight shards of ``site`` again from its model's seed; (identical to the build?, model dir).

    ``None``: nothing was missing. Mismatching shards are kept (and the manifest updated) so the run can go on;
    the report says the weights differ from the site that was built."""
    manifest_path = site / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    cfg = site_config(manifest, cache)
    model_dir = models.weights_dir(cfg)
    missing = [p for p in manifest["files"] if not (site / "model" / p).exists()]
    if not missing and model_dir.exists():
        return None, model_dir
    if not (model_dir / hf.STAMP).exists():
        print(f"making {manifest['model']} (seed {manifest.get('seed', 0)}) in {model_dir}", flush=True)
        hf.materialize(cfg)
    if not missing:
        return None, model_dir
    for sub in submodels.names():
        print(f"sharding {sub} from the model", flush=True)
        wrapper = code.entry(sub).wrapper(cfg)  # its parameter names are the trace's (torch.export keeps them)
        shard.rebuild_cache(site / "model" / "params" / sub, dict(wrapper.named_parameters()))
    identical = True
    for p in missing:
        digest = sha256_file(site / "model" / p)
        if digest != manifest["files"][p]["sha256"]:
            identical = False
            print(f"WARNING: {p} differs from the built site's (sha256 {digest[:12]}); continuing with it",
                  flush=True)
            manifest["files"][p]["sha256"] = digest
    write_json(manifest_path, manifest)
    return identical, model_dir


def initial_latents(manifest: dict) -> np.ndarray:
    """The latents every image of a site starts from (page, peer and diffusers alike)."""
    import torch

    return torch.randn((1, manifest["latent_channels"], manifest["latent_height"], manifest["latent_width"]),
                       generator=torch.Generator().manual_seed(LATENTS_SEED)).numpy().astype("<f4")


def run_peer(site: Path, manifest: dict, out: Path, args, device: str, model_dir: Path, tokenizer_dir: Path,
             settings: dict) -> dict:
    """ONNX Runtime's WebGPU EP on the site's model (benchmarks/ort_peer.py, a child process), checked like the page."""
    if not settings["classifier_free"] or settings["scheduler"] != "dpm++2m":
        # ort_peer.py steps SD v1.x's way only: a batch-2 UNet with guidance inside, DPM-Solver++
        return {"skipped": f"the ORT peer runs classifier-free DPM-Solver++ models; {manifest['model']} is "
                           f"{settings['scheduler']} with guidance {settings['guidance']}"}
    out.mkdir(parents=True, exist_ok=True)
    latents = initial_latents(manifest)
    latents.tofile(out / "latents.f32")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ort_peer.py"), "--site", str(site), "--cache",
           str(args.work / "cache"), "--latents", str(out / "latents.f32"), "--out", str(out), "--prompt", PROMPT,
           "--negative", NEGATIVE, "--guidance", str(settings["guidance"]), "--steps", str(settings["steps"]), "--images",
           str(max(5, args.images)), "--repeats", str(max(5, args.warm))]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=args.runner_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"ort_peer ran over --runner-timeout {args.runner_timeout} s"}
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        (out / "stderr.log").write_text(proc.stderr)  # ORT's own log: why a mode or the export failed
        return {"error": (proc.stderr.strip().splitlines() or ["ort_peer failed"])[-1][:2000],
                "wall_s": round(time.perf_counter() - start, 1)}
    result = json.loads((out / "result.json").read_text())
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result.update(check_outputs(out, manifest, latents, args, device, model_dir, tokenizer_dir, settings))
    return result


def check_outputs(out: Path, manifest: dict, latents: np.ndarray, args, device: str, model_dir: Path,
                  tokenizer_dir: Path, settings: dict) -> dict:
    """A run's io/ and pixels.f32 (the page's or the peer's) against the torch wrappers and diffusers."""
    cfg = site_config(manifest, args.work / "cache")
    errors = submodel_errors(cfg, out / "io", device)
    pixels = np.fromfile(out / "pixels.f32", dtype="<f4").reshape(manifest["height"], manifest["width"], 3)
    pipe = load_reference_pipeline(model_dir, tokenizer_dir, device=device, dtype="float32",
                                   vae_tile=manifest.get("vae_tile"))
    return {"submodel_errors": errors, "image": image_check(pipe, pixels, latents, settings)}


UNSAFE_APIS = "allow_unsafe_apis"  # Dawn's toggle that exposes experimental features (chromium-experimental-*)


def dawn_features(manifest: dict, args) -> list[str]:
    """The Dawn toggles of a site's runs: the command line's, and allow_unsafe_apis where a variant needs an
    experimental feature (Dawn hides chromium-experimental-subgroup-matrix without it)."""
    experimental = any(f.startswith("chromium-experimental-") for v in manifest.get("variants", [])
                       for f in v.get("requires", {}).get("features", []))
    return [*args.dawn_feature, *([UNSAFE_APIS] if experimental and UNSAFE_APIS not in args.dawn_feature else [])]


def runnable_variants(node: str, site: Path, features: list[str]) -> list[str]:
    """The site's builds this adapter runs, fastest first, "default" last (the runner's --list-adapter --site)."""
    cmd = [node, str(RUNNER), "--list-adapter", "--site", str(site)]
    for feature in features:
        cmd += ["--dawn-feature", feature]
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise WebsdError(f"the runner could not list the variants of {site}: {proc.stderr.strip()[-500:]}")
    return re.findall(r"^variant (\S+): runs$", proc.stdout, re.M)


def run_runner(node: str, site: Path, out: Path, latents: Path, args, settings: dict, variant: str = "auto",
               features: list[str] | None = None) -> dict:
    cmd = [node, str(RUNNER), "--site", str(site), "--out", str(out), "--latents", str(latents),
           "--prompt", PROMPT, "--negative", NEGATIVE, "--guidance", str(settings["guidance"]), "--steps",
           str(settings["steps"]), "--scheduler", settings["scheduler"], "--seed", str(NOISE_SEED),
           "--images", str(args.images), "--warm", str(args.warm), "--launch", args.launch, "--variant", variant]
    for feature in args.dawn_feature if features is None else features:
        cmd += ["--dawn-feature", feature]
    if args.profile:
        cmd.append("--profile")
    if args.serial_load:
        cmd.append("--serial-load")
    # the page's weight cache on disk, empty at first: the runner loads twice, a first and a returning visit
    cache_dir = out / "weight-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cmd += ["--cache-dir", str(cache_dir)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=args.runner_timeout)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)  # a copy of every weight: GBs for SD v1.5
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("["))
    print(log, flush=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["runner failed"])[-1][:2000],
                "wall_s": round(time.perf_counter() - start, 1)}
    result = json.loads((out / "result.json").read_text())
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def _read(io_dir: Path, spec: dict) -> np.ndarray:
    return np.fromfile(io_dir / spec["file"], dtype=spec["dtype"]).reshape(spec["shape"])


def submodel_errors(cfg, io_dir: Path, device: str) -> dict:
    """Max abs error of each submodel's first call on the GPU against its torch wrapper (float32) on the same
    inputs."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 means float32
    io = json.loads((io_dir / "io.json").read_text())
    out = {}
    for sub in submodels.names():
        wrapper = code.entry(sub).wrapper(cfg).to(device)
        inputs = [torch.from_numpy(_read(io_dir, s).copy()).to(device) for s in io[sub]["inputs"]]
        with torch.no_grad():
            ref = wrapper(*inputs).float().cpu().numpy()
        got = _read(io_dir, io[sub]["output"])
        out[sub] = {"max_abs_err": float(np.max(np.abs(got.astype(np.float64) - ref))),
                    "ref_max_abs": float(np.max(np.abs(ref))),
                    "rel_l2_err": float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))}
        del wrapper
    return out


def image_check(pipe, pixels: np.ndarray, latents: np.ndarray, settings: dict) -> dict:
    """``pixels``: H x W x 3 (the image's size)."""
    args = {"scheduler": settings["scheduler"], "prompt": PROMPT, "negative_prompt": NEGATIVE,
            "steps": settings["steps"], "guidance": settings["guidance"], "width": pixels.shape[1],
            "height": pixels.shape[0], "latents": latents, "seed": NOISE_SEED}
    ref = reference_image(pipe, **args)
    result = {"psnr_db": psnr(pixels, ref), "max_abs_diff": max_abs_diff(pixels, ref),
              "rms_diff": float(np.sqrt(np.mean((pixels.astype(np.float64) - ref) ** 2))), "wrong_inputs": {}}
    for name, change in wrong_inputs(settings).items():
        wrong = reference_image(pipe, **{**args, **change})
        result["wrong_inputs"][name] = {
            "psnr_db": psnr(pixels, wrong), "max_abs_diff": max_abs_diff(pixels, wrong),
            "rms_diff": float(np.sqrt(np.mean((pixels.astype(np.float64) - wrong) ** 2))),
            # how far the wrong reference is from the right one: the bar must sit well inside this
            "rms_from_right_reference": float(np.sqrt(np.mean((wrong.astype(np.float64) - ref) ** 2)))}
    return judge(result)


def passes(metrics: dict) -> bool:
    """The correctness bar: PSNR >= 30 dB and no pixel off by more than MAX_ABS_DIFF of 255."""
    return metrics["psnr_db"] >= PSNR_MIN_DB and metrics["max_abs_diff"] <= MAX_ABS_DIFF


def judge(result: dict) -> dict:
    """Add the verdicts: the image passes the bar, and every reference made with a wrong input fails it."""
    result["passes_bar"] = passes(result)
    result["wrong_inputs_fail_bar"] = not any(passes(w) for w in result["wrong_inputs"].values())
    result["wrong_inputs_over_psnr_bar"] = sorted(k for k, w in result["wrong_inputs"].items()
                                                  if w["psnr_db"] >= PSNR_MIN_DB)
    # how much closer the page is to the right reference than to the nearest wrong one (RMS)
    result["contrast"] = (min(w["rms_diff"] for w in result["wrong_inputs"].values())
                          / max(result["rms_diff"], 1e-12))
    for stale in ("passes_psnr_bar", "wrong_inputs_missing_bar"):
        result.pop(stale, None)
    return result


def _median_ms(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def torch_timings(model_dir: Path, tokenizer_dir: Path, device: str, dtype: str, width: int, height: int,
                  settings: dict, repeats: int) -> dict:
    """diffusers on ``device`` in ``dtype`` (default attention: SDPA), per submodel and per image, medians; the UNet
    at the batch the model runs (2 with classifier-free guidance, else 1) and the image with the site's settings."""
    import diffusers
    import torch
    from pipeline.page.reference import SCHEDULER_CLASSES

    pipe = load_reference_pipeline(model_dir, tokenizer_dir, device=device, dtype=dtype)
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.scheduler = getattr(diffusers, SCHEDULER_CLASSES[settings["scheduler"]]).from_config(pipe.scheduler.config)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    tdtype = getattr(torch, dtype)
    latent = (height // 8, width // 8)
    batch = 2 if settings["classifier_free"] else 1
    ids = torch.randint(0, pipe.text_encoder.config.vocab_size, (batch, 77), device=device)
    emb = torch.randn(batch, 77, pipe.text_encoder.config.hidden_size, device=device, dtype=tdtype)
    lat = torch.randn(batch, pipe.unet.config.in_channels, *latent, device=device, dtype=tdtype)
    lat1 = lat[:1].contiguous()
    t = torch.tensor([500.0], device=device)
    cond = {}
    if pipe.unet.config.time_cond_proj_dim:  # LCM: the guidance scale's embedding
        cond["timestep_cond"] = torch.randn(batch, pipe.unet.config.time_cond_proj_dim, device=device, dtype=tdtype)
    negative = {} if type(pipe).__name__ == "LatentConsistencyModelPipeline" else {"negative_prompt": NEGATIVE}
    with torch.no_grad():
        res = {"clip_ms": _median_ms(lambda: pipe.text_encoder(ids), repeats, sync),
               "unet_step_ms": _median_ms(lambda: pipe.unet(lat, t, encoder_hidden_states=emb, **cond), repeats, sync),
               "vae_ms": _median_ms(lambda: pipe.vae.decode(lat1 / pipe.vae.config.scaling_factor), repeats, sync)}
    latents = torch.randn(1, pipe.unet.config.in_channels, *latent, generator=torch.Generator().manual_seed(LATENTS_SEED))
    res["image_s"] = _median_ms(lambda: pipe(prompt=PROMPT, num_inference_steps=settings["steps"],
                                             guidance_scale=settings["guidance"], height=height, width=width,
                                             latents=latents.to(device, tdtype), output_type="np", **negative),
                                max(2, repeats // 4), sync) / 1000
    res["unet_batch"] = batch
    del pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {k: round(v, 4) for k, v in res.items()}


def kernel_category(kernel: str) -> str:
    for op in ("group_norm", "conv2d", "matmul", "softmax", "layer_norm"):
        if op in kernel:
            return op
    return "other"


def add_kernel_rates(profile: dict, costs: dict) -> None:
    """Each profiled kernel gets achieved TFLOP/s and GB/s (its FLOPs and argument bytes from the site's
    model/kernels.json, per call, over its measured time); each submodel a per-category breakdown."""
    for sub, p in profile.items():
        sub_costs = costs.get(sub, {})
        by_category = {}
        for k in p["kernels"]:
            cat = by_category.setdefault(kernel_category(k["kernel"]), {"ms": 0.0, "calls": 0, "flops": 0})
            cat["ms"] += k["ms"]
            cat["calls"] += k["calls"]
            cost = sub_costs.get(re.sub(r"_kernel(_\d+)?$", "", k["kernel"]))
            if cost and k["ms"] > 0:
                seconds = k["ms"] / 1e3
                if cost["flops"] >= 0:
                    k["tflops"] = round(cost["flops"] * k["calls"] / seconds / 1e12, 3)
                    cat["flops"] += cost["flops"] * k["calls"]
                k["gbytes_s"] = round(cost["bytes"] * k["calls"] / seconds / 1e9, 1)
        p["categories"] = {c: {"ms": round(v["ms"], 3), "share": round(v["ms"] / max(p["total_ms"], 1e-9), 4),
                               "calls": v["calls"],
                               "tflops": round(v["flops"] / (v["ms"] / 1e3) / 1e12, 3) if v["ms"] else None}
                           for c, v in sorted(by_category.items(), key=lambda kv: -kv[1]["ms"])}


def _name(s: dict) -> str:
    label = s.get("label", s["dtype"])
    ran = s.get("runner", {}).get("variant")  # an auto row of a site with variants: which build ran
    kernels = f" [{ran} kernels]" if ran and ran != "default" and ":" not in label else ""
    return f"{label}{kernels}: {s['dtype']} ({s['limits_profile']})"


def _load_s(load: dict | None) -> str:
    """A load as the table shows it: seconds (busy download+check / pipelines / upload), where its files came
    from."""
    if not load:
        return "not measured"
    f = load.get("files", {})
    return (f"{load['total_ms'] / 1000:.1f} ({load['download_ms'] / 1000:.1f} / {load['pipelines_ms'] / 1000:.1f} / "
            f"{load['upload_ms'] / 1000:.1f}; {f.get('cached_files')} files cached, {f.get('fetched_files')} fetched)")


def markdown(report: dict) -> str:
    st = report.get("settings") or {"steps": report["steps"], "guidance": GUIDANCE, "scheduler": "dpm++2m"}
    lines = [f"### WebGPU (Dawn) vs PyTorch: {report['model']} on {report['device_name']}",
             f"({report['date']}; {st['steps']} {SCHEDULER_NAMES.get(st['scheduler'], st['scheduler'])} steps, "
             f"guidance {st['guidance']}, {report['width']}x{report['height']}; medians; commit "
             f"{(report.get('commit') or 'unknown')[:12]})", ""]
    torch_ref = report.get("torch", {})
    lines += ["| site | load s (busy: download / pipelines / upload; submodels overlap) | second load s (weights cached) |"
              " clip ms | unet step ms | vae ms | s per image | PyTorch fp16 s/img | ratio | PSNR dB |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in report["sites"]:
        r = s.get("runner", {})
        if "error" in r:
            lines.append(f"| {_name(s)} | failed: {r['error'][:160]} | | | | | | | | |")
            continue
        ld, c = r["load"], r["calls"]
        ref = torch_ref.get("float16", {}).get("image_s")
        spi = r["seconds_per_image_warm_median"] or r["seconds_per_image_median"]
        img = s.get("image", {})
        lines.append(
            f"| {_name(s)} | {ld['total_ms'] / 1000:.1f} ({ld['download_ms'] / 1000:.1f} / "
            f"{ld['pipelines_ms'] / 1000:.1f} / {ld['upload_ms'] / 1000:.1f}) | {_load_s(r.get('second_load'))} | "
            f"{c['clip']['warm_median_ms']} | "
            f"{c['unet']['warm_median_ms']} | {c['vae']['warm_median_ms']} | {spi} | {ref} | "
            f"{(spi / ref) if ref else float('nan'):.1f}x | {img.get('psnr_db', float('nan')):.1f} |")
    if torch_ref:
        batch = next(iter(torch_ref.values())).get("unet_batch", 2)
        lines += ["", f"| PyTorch (diffusers, SDPA) | clip ms | unet step ms (batch {batch}) | vae ms | s per image |",
                  "|---|---:|---:|---:|---:|"]
        for dt, t in torch_ref.items():
            lines.append(f"| {dt} | {t['clip_ms']} | {t['unet_step_ms']} | {t['vae_ms']} | {t['image_s']} |")
    lines += ["", "Ratios per submodel (websd warm median / PyTorch same dtype):", ""]
    for s in report["sites"]:
        r = s.get("runner", {})
        t = torch_ref.get(s["dtype"])
        if "error" in r or not t:
            continue
        c = r["calls"]
        lines.append(f"- {_name(s)}: clip {c['clip']['warm_median_ms'] / t['clip_ms']:.1f}x, unet "
                     f"{c['unet']['warm_median_ms'] / t['unet_step_ms']:.1f}x, vae "
                     f"{c['vae']['warm_median_ms'] / t['vae_ms']:.1f}x, image "
                     f"{(r['seconds_per_image_warm_median'] or r['seconds_per_image_median']) / t['image_s']:.1f}x")
    for s in report["sites"]:
        prof = s.get("runner", {}).get("profile")
        if not prof:
            continue
        peak = next((v for k, v in PEAKS.items() if k in report.get("device_name", "")), None)
        lines += ["", f"Where the GPU time goes, {_name(s)} (one image, every kernel launch timed with WebGPU "
                      "timestamp queries; top 5 per submodel"
                  + (f"; rates against the FP32 peak {peak['fp32_tflops']} TFLOP/s and HBM {peak['hbm_tb_s']} TB/s"
                     if peak else "") + "):", ""]
        calls = s["runner"]["calls"]
        for sub, p in prof.items():
            def rate(k):
                if "tflops" not in k:
                    return ""
                pct = f" = {100 * k['tflops'] / peak['fp32_tflops']:.0f}% / {k['gbytes_s'] / 10 / peak['hbm_tb_s']:.0f}%" \
                    if peak else ""
                return f", {k['tflops']:.2f} TFLOP/s, {k['gbytes_s']:.0f} GB/s{pct}"
            top = "; ".join(f"{k['kernel']} {k['ms']:.1f} ms ({100 * k['share']:.0f}%, {k['calls']}x{rate(k)})"
                            for k in p["kernels"][:5])
            lines.append(f"- {sub}: {p['total_ms']:.0f} ms of GPU time per image, {len(p['kernels'])} distinct "
                         f"kernels; {top}")
            if p.get("categories"):
                lines.append("  - by op: " + ", ".join(
                    f"{c} {v['ms']:.0f} ms ({100 * v['share']:.0f}%, {v['calls']} launches"
                    + (f", {v['tflops']:.2f} TFLOP/s" if v.get("tflops") else "") + ")"
                    for c, v in sorted(p["categories"].items(), key=lambda kv: -kv[1]["ms"])))
            ops, n_calls = calls.get(sub, {}).get("webgpu_ops_per_call"), report["steps"] if sub == "unet" else 1
            if ops:
                gpu_ms = p["total_ms"] / n_calls
                wall = calls[sub]["warm_median_ms"]
                lines.append(f"  - per call ({s['runner'].get('launch', 'plain')} launch): {ops['dispatches']} "
                             f"dispatches, {ops.get('bind_groups', '?')} bind groups created, "
                             f"{ops.get('passes', '?')} compute passes, {ops['submits']} submits, "
                             f"{ops['writes']} buffer writes, {ops['reads']} readbacks; GPU busy {gpu_ms:.1f} ms of "
                             f"{wall} ms wall ({wall - gpu_ms:.1f} ms not covered by kernels)")
    lines += ["", "Correctness (against diffusers float32 on the same weights, prompt and latents):", ""]
    for s in report["sites"]:
        img, errs = s.get("image"), s.get("submodel_errors")
        if not img:
            continue
        wrong = ", ".join(f"{k} {v['psnr_db']:.1f} dB / {v['max_abs_diff']:.1f}"
                          for k, v in img["wrong_inputs"].items())
        lines.append(f"- {_name(s)}: PSNR {img['psnr_db']:.2f} dB, max abs {img['max_abs_diff']:.3f}/255: "
                     f"{'PASSES' if img['passes_bar'] else 'FAILS'} the bar (PSNR >= {PSNR_MIN_DB:.0f} dB and max abs "
                     f"<= {MAX_ABS_DIFF}/255); references with a wrong input (PSNR / max abs): {wrong}: "
                     f"{'all fail it' if img['wrong_inputs_fail_bar'] else 'SOME PASS IT'}; RMS contrast "
                     f"{img['contrast']:.0f}x; weights identical to the build: {s.get('weights_identical')}; "
                     f"manifest sha256 {s.get('manifest_sha256', 'not recorded')[:16]}")
        if errs:
            lines.append("  - max abs error per submodel: " + ", ".join(
                f"{k} {v['max_abs_err']:.3g} (of max |ref| {v['ref_max_abs']:.3g})" for k, v in errs.items()))
    lines += ort_peer.markdown_lines(report, _name)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", action="append", default=[], help="a site directory doit built (repeatable)")
    ap.add_argument("--node", default=shutil.which("node") or "node")
    ap.add_argument("--steps", type=int, help="default: the model's own (manifest.json defaults)")
    ap.add_argument("--guidance", type=float, help="default: the model's own")
    ap.add_argument("--scheduler", help="default: the model's own (dpm++2m, euler, euler-a, lcm)")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--torch-repeats", type=int, default=10)
    ap.add_argument("--dawn-feature", action="append", default=[])
    ap.add_argument("--work", type=Path, default=ROOT / "cache" / "bench-webgpu")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch timings")
    ap.add_argument("--profile", action="store_true",
                    help="one more image per site with every kernel timed (WebGPU timestamp queries)")
    ap.add_argument("--serial-load", action="store_true", help="load the submodels one by one, not concurrently")
    ap.add_argument("--launch", choices=["replay", "plain"], default="replay",
                    help="the page's kernel launch path (web/src/launch.js) or tvmjs' own")
    ap.add_argument("--variants", choices=["auto", "all"], default="auto",
                    help="auto: each site's fastest build this adapter runs (as the page); all: every build it runs, "
                         "a row each (<label>:<variant>)")
    ap.add_argument("--runner-timeout", type=int, default=1800)
    ap.add_argument("--peer", action="append", default=[], choices=["ort"],
                    help="also run a peer on each site's model: ort = ONNX Runtime's WebGPU EP (benchmarks/ort_peer.py)")
    ap.add_argument("--report-only", type=Path, help="re-judge a report JSON and rewrite it and its .md")
    args = ap.parse_args(argv)
    if args.report_only:
        report = json.loads(args.report_only.read_text())
        for entry in report["sites"]:
            if entry.get("image"):
                judge(entry["image"])
        report.update(bar={"psnr_db_min": PSNR_MIN_DB, "max_abs_diff_max": MAX_ABS_DIFF})
        write_json(args.report_only, report)
        args.report_only.with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
        return 0

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, list[str]] = {}  # one report per model and image size: its sites side by side
    for site_arg in args.site:
        m = json.loads((Path(site_arg) / "model" / "manifest.json").read_text())
        groups.setdefault((m["model"], m["width"], m["height"]), []).append(site_arg)
    ok = True
    for (model, width, height), site_args in groups.items():
        ok &= bench_model(site_args, args, device, device_name, torch)
    return 0 if ok else 1


def report_stem(report: dict, device: str, device_name: str, launch: str) -> str:
    """``webgpu-<model>[-<w>x<h>]-<device>[-plain-launch]``: the size only where it is not the model's own."""
    stem = f"webgpu-{report.get('model', 'none')}"
    own = report.get("model_size")
    if own and (report["width"], report["height"]) != tuple(own):
        stem += f"-{report['width']}x{report['height']}"
    stem += f"-{'h200' if 'H200' in device_name else device}"
    return stem + ("-plain-launch" if launch == "plain" else "")  # tvmjs' own launch, beside the page's (replay)


def model_size(model: str) -> tuple[int, int] | None:
    """A registered model's own image size (None for a local folder)."""
    try:
        d = models.dims(load_config(cli={"model.name": model}))
    except WebsdError:
        return None
    return d.width, d.height


def bench_model(site_args: list[str], args, device: str, device_name: str, torch) -> bool:
    """Every site of one model and size against PyTorch in the same run; writes their report."""
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": ort_peer.commit(), "device": device,
              "device_name": device_name, "torch": {}, "sites": [], "prompt": PROMPT, "negative_prompt": NEGATIVE,
              "dawn_features": args.dawn_feature, "launch": args.launch,
              "bar": {"psnr_db_min": PSNR_MIN_DB, "max_abs_diff_max": MAX_ABS_DIFF},
              "metric": "runner VAE output floats vs diffusers output_type='np' * 255, 0..255 scale"}
    partial = args.results / "partial-report.json"  # survives a run that is cut short
    model_dir = tokenizer_dir = None
    sites = []
    for site_arg in site_args:  # first make every site complete (weights from the seed where shards are absent)
        site = Path(site_arg).resolve()  # cache/site is a link to the current version: measure that version
        manifest = json.loads((site / "model" / "manifest.json").read_text())
        settings = site_settings(manifest, args)
        report.update(model=manifest["model"], width=manifest["width"], height=manifest["height"],
                      settings=settings, steps=settings["steps"], model_size=model_size(manifest["model"]))
        # a site doit built is named "site" (a link); copies to compare get names of their own
        name = Path(site_arg).name
        label = name if name != "site" else f"{manifest['model']}-{manifest['dtype']}"
        entry = {"site": str(site), "label": label, "dtype": manifest["dtype"],
                 "limits_profile": manifest.get("limits_profile"), "required_limits": manifest.get("required_limits"),
                 # what was measured, so a stale figure shows (before the shards are made again)
                 "manifest_sha256": sha256_file(site / "model" / "manifest.json"),
                 "wasm_sha256": {str(w.relative_to(site / "model").with_suffix("")): sha256_file(w)
                                 for w in sorted((site / "model").rglob("*.wasm"))},
                 "variant": "auto", "dawn_features": dawn_features(manifest, args)}
        try:
            entry["weights_identical"], model_dir = complete_site(site, args.work / "cache")
            tokenizer_dir = site / "model" / "tokenizer"
            rows = [entry]
            if args.variants == "all" and manifest.get("variants"):  # a row per build this adapter runs
                rows = [{**entry, "label": f"{label}:{v}", "variant": v}
                        for v in runnable_variants(args.node, site, entry["dawn_features"])]
            report["sites"] += rows
            sites += [(site, manifest, row) for row in rows]
        except WebsdError as e:
            entry["runner"] = {"error": f"could not complete the site: {e}"}
            report["sites"].append(entry)
    settings = report["settings"]
    if not args.no_torch and model_dir is not None:  # the reference timings first: they take seconds
        for dtype in (["float16", "float32"] if device == "cuda" else ["float32"]):
            print(f"PyTorch {dtype} on {device_name}", flush=True)
            report["torch"][dtype] = torch_timings(model_dir, tokenizer_dir, device, dtype, report["width"],
                                                   report["height"], settings, args.torch_repeats)
            print(f"  {report['torch'][dtype]}", flush=True)
        write_json(partial, report)
    for site, manifest, entry in sites:
        out = args.work / f"run-{entry['label'].replace(':', '-')}"
        latents = initial_latents(manifest)
        out.mkdir(parents=True, exist_ok=True)
        latents.tofile(out / "latents.f32")
        entry["runner"] = run_runner(args.node, site, out, out / "latents.f32", args, settings, entry["variant"],
                                     entry["dawn_features"])
        if entry["runner"].get("profile") and (site / "model" / "kernels.json").exists():
            add_kernel_rates(entry["runner"]["profile"], json.loads((site / "model" / "kernels.json").read_text()))
        write_json(partial, report)
        if "error" in entry["runner"]:
            continue
        entry["image_file"] = str(out / "image.png")  # under --work: a picture, not a result to commit
        entry.update(check_outputs(out, manifest, latents, args, device, model_dir, tokenizer_dir, settings))
        write_json(partial, report)
    for site, manifest, entry in sites if "ort" in args.peer else ():
        print(f"ONNX Runtime WebGPU EP: {entry['label']}", flush=True)
        entry["ort"] = run_peer(site, manifest, args.work / f"ort-{entry['label']}", args, device, model_dir,
                                site / "model" / "tokenizer", settings)
        entry["ratios"] = ort_peer.ratios(entry, report["torch"].get(entry["dtype"]))
        write_json(partial, report)
    partial.unlink(missing_ok=True)
    stem = report_stem(report, device, device_name, args.launch)
    write_json(args.results / f"{stem}.json", report)
    (args.results / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.results / stem}.json and .md")
    return all("error" not in s.get("runner", {}) for s in report["sites"])

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
