"""The peer in the GPU benchmark: ONNX Runtime's WebGPU execution provider (Dawn) on the same submodels and weights.

    python benchmarks/ort_peer.py --site SITE --cache CACHE --latents latents.f32 --out DIR [--steps 20]

``bench_webgpu.py --peer ort`` runs this once per site, as a child process (the plugin's Dawn device, its C++ logs
and its GPU memory end with it, and a crash in the plugin costs the peer's figures, not the run). It

1. exports the site's model (made from its seed, as the websd side does; ``CACHE`` holds it) to ONNX in the site's
   dtype: the page's own entry wrappers (``pipeline/submodels``: clip(input_ids), unet(latents, timestep, text_emb,
   guidance) = one UNet call on the batch of 2 with the guidance inside, vae(latents) -> 0..255 NHWC), with
   PyTorch's own attention (diffusers' default SDPA processor in the UNet and VAE, transformers' eager attention
   in CLIP): the page's websd::attention op is ours (ONNX has no translation for it), so the peer gets its own form. Exported with the recipe
   that ran on the H200 (``torch.onnx.export(dynamo=True, external_data=True, opset_version=18)``);
2. opens one session per submodel on the WebGPU EP at the best configuration that runs, trying in order:
   ``graph_capture`` (device tensors bound once with I/O binding, the graph recorded on the first call and
   replayed), ``io_binding`` (the same device tensors, no capture), ``session_run`` (numpy in and out); each
   first with every node on the EP required (``session.disable_cpu_ep_fallback``), then without. What failed and
   why is kept in the result;
3. times each submodel's warm calls and whole images (clip, ``steps`` UNet calls with DPM-Solver++ on the host, as
   diffusers and the page step it, vae) on the page's prompt, guidance and initial latents;
4. writes to ``--out``: result.json, pixels.f32 (the image, H x W x 3 float32 on 0..255) and io/ (each
   submodel's first call in the runner's io.json layout), which bench_webgpu.py checks against diffusers and the
   torch wrappers exactly as it checks the page.

A timed call ends when its output is on the host: ORT returns from a WebGPU run before the GPU is done, and the
page needs each output on the host too (the scheduler steps there).
On a software adapter (lavapipe: CI, this repo's tests) the plugin needs ``ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.model import hf
from pipeline import models, submodels
from pipeline.submodels import code  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.errors import WebsdError  # noqa: E402
from pipeline.fsutil import atomic_path, atomic_write, sha256_file, write_json  # noqa: E402

MODES = ("graph_capture", "io_binding", "session_run")
OPSET = 18
# the wrappers' float inputs take the model's dtype, but the timestep stays float32: diffusers computes the time
# embedding in float32 and casts it to the model's dtype itself
FLOAT32_INPUTS = {"timestep"}
ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64}
PACKAGES = ("onnxruntime", "onnxruntime-ep-webgpu", "onnx", "onnxscript", "torch")


def import_ort():
    """onnxruntime with the WebGPU plugin registered, or a one-line error naming the fix."""
    try:
        import onnxruntime as ort
        import onnxruntime_ep_webgpu as plugin
    except ImportError as e:
        raise WebsdError(f"ONNX Runtime's WebGPU EP is not installed ({e}): run ./setup.sh, or on a GPU machine "
                         "without a registry carry the wheels (benchmarks/gpu_bundle.sh pack)") from None
    if plugin.get_ep_name() not in {d.ep_name for d in ort.get_ep_devices()}:
        ort.register_execution_provider_library("webgpu", plugin.get_library_path())
    return ort, plugin


def ep_device():
    """The WebGPU EP's device (the plugin picks the adapter itself: high-performance, Dawn's first)."""
    ort, plugin = import_ort()
    device = next((d for d in ort.get_ep_devices() if d.ep_name == plugin.get_ep_name()), None)
    if device is None:
        raise WebsdError("ONNX Runtime's WebGPU EP found no adapter: install a Vulkan driver (and libvulkan1), or "
                         "for a software one (lavapipe) set ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1 and "
                         "VK_ICD_FILENAMES")
    return device


def describe_device(device) -> dict:
    """What ORT says about the device it runs on (the plugin exposes no WebGPU adapter info to Python)."""
    hw = device.device
    return {"ep": device.ep_name, "ep_vendor": device.ep_vendor, "ep_version": dict(device.ep_metadata).get("version"),
            "type": str(hw.type).rsplit(".", 1)[-1], "vendor": hw.vendor, "vendor_id": hw.vendor_id,
            "device_id": hw.device_id, "metadata": dict(hw.metadata),
            "software_adapter_allowed": os.environ.get("ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER") == "1"}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def commit() -> str | None:
    """The repo's commit where git and the .git directory are at hand; a copied tree on a GPU machine has neither,
    so there WEBSD_COMMIT (set by whoever sent the tree, e.g. ``WEBSD_COMMIT=$(git rev-parse HEAD)``) names it."""
    if os.environ.get("WEBSD_COMMIT"):
        return os.environ["WEBSD_COMMIT"]
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() or None


def example_inputs(cfg, sub: str, dtype: str) -> dict[str, np.ndarray]:
    """The submodel's example inputs (the trace's), float ones in ``dtype`` but the timestep."""
    import torch

    ins = code.entry(sub).inputs(models.dims(cfg), torch.Generator().manual_seed(0))
    return {k: v.numpy().astype(dtype) if v.is_floating_point() and k not in FLOAT32_INPUTS else v.numpy()
            for k, v in ins.items()}


def export_wrapper(cfg, sub: str, dtype: str, path: Path) -> None:
    """``path`` (+ ``path.data``): the submodel's entry wrapper as ONNX in ``dtype``, default attention."""
    import torch
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0
    from transformers import PreTrainedModel

    wrapper = code.entry(sub).wrapper(cfg)
    # not the page's websd::attention op, which ONNX lacks: diffusers' default (SDPA) in the UNet and the VAE;
    # transformers' eager attention in CLIP (with "sdpa", ORT puts CLIP's causal-mask nodes on the CPU EP)
    for module in wrapper.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor2_0())
        elif isinstance(module, PreTrainedModel):
            module.set_attn_implementation("eager")
    wrapper = wrapper.to(getattr(torch, dtype))
    ins = {k: torch.from_numpy(v) for k, v in example_inputs(cfg, sub, dtype).items()}
    with torch.no_grad():
        torch.onnx.export(wrapper, tuple(ins.values()), str(path), dynamo=True, external_data=True,
                          opset_version=OPSET, input_names=list(ins), output_names=[submodels.get(sub).output],
                          verbose=False)


def export_all(cfg, dtype: str, out_dir: Path) -> dict:
    """The submodels as ONNX in ``out_dir`` (one atomic directory; an existing complete one is kept)."""
    report = {}
    if out_dir.is_dir():
        return json.loads((out_dir / "export.json").read_text())
    with atomic_path(out_dir) as work:
        work.mkdir(parents=True)
        for sub in submodels.names():
            start = time.perf_counter()
            export_wrapper(cfg, sub, dtype, work / f"{sub}.onnx")
            files = sorted(work.glob(f"{sub}.onnx*"))  # the graph and its external weights: what is measured
            report[sub] = {"seconds": round(time.perf_counter() - start, 1),
                           "bytes": sum(p.stat().st_size for p in files),
                           "sha256": {p.name: sha256_file(p) for p in files}}
            print(f"exported {sub} ({dtype}) in {report[sub]['seconds']} s", flush=True)
        write_json(work / "export.json", report)
    return report


class PeerSession:
    """One submodel on the WebGPU EP in one mode: ``write`` inputs, ``run`` returns the output on the host."""

    def __init__(self, path: Path, device, mode: str, strict: bool, log_level: int = 2):
        ort, _ = import_ort()
        self.ort, self.mode = ort, mode
        options = ort.SessionOptions()
        options.log_severity_level = log_level
        if strict:  # a node left to the CPU EP is an error, not a silent round trip through the host
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        provider_options = {}
        if mode == "graph_capture":
            options.enable_mem_pattern = False  # the replayed graph needs buffers that stay put
            provider_options["enableGraphCapture"] = "1"
        options.add_provider_for_devices([device], provider_options)
        self.session = ort.InferenceSession(str(path), sess_options=options)
        self.inputs = {i.name: (tuple(i.shape), ONNX_TYPES[i.type]) for i in self.session.get_inputs()}
        (out,) = self.session.get_outputs()
        self.output = (out.name, tuple(out.shape), ONNX_TYPES[out.type])
        self.feed: dict[str, np.ndarray] = {}
        if mode != "session_run":
            self.binding = self.session.io_binding()
            self.device_inputs = {}
            for name, (shape, dtype) in self.inputs.items():
                self.device_inputs[name] = self.session.create_ortvalue_from_shape_and_type(shape, dtype, "webgpu")
                self.binding.bind_ortvalue_input(name, self.device_inputs[name])
            name, shape, dtype = self.output
            self.device_output = self.session.create_ortvalue_from_shape_and_type(shape, dtype, "webgpu")
            self.binding.bind_ortvalue_output(name, self.device_output)
            self.host_output = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype))

    def write(self, name: str, array: np.ndarray) -> None:
        shape, dtype = self.inputs[name]
        array = np.ascontiguousarray(array, dtype=dtype).reshape(shape)
        if self.mode == "session_run":
            self.feed[name] = array
        else:  # into the bound device tensor: a captured graph reads its inputs from there
            self.ort.copy_tensors([self.ort.OrtValue.ortvalue_from_numpy(array)], [self.device_inputs[name]])

    def run(self) -> np.ndarray:
        if self.mode == "session_run":
            return self.session.run(None, self.feed)[0]
        self.session.run_with_iobinding(self.binding)
        self.ort.copy_tensors([self.device_output], [self.host_output])  # waits for the GPU
        return self.host_output.numpy().copy()


def open_best(path: Path, device, example: dict[str, np.ndarray]) -> tuple[PeerSession, dict]:
    """The first (mode, all nodes on the EP?) that opens and runs the example; what was tried and why it failed."""
    tried = []
    for mode in MODES:
        for strict in (True, False):
            if mode == "graph_capture" and not strict:
                continue  # ORT captures only graphs that run entirely on the EP
            start = time.perf_counter()
            try:
                sess = PeerSession(path, device, mode, strict)
                open_s = time.perf_counter() - start
                for name, value in example.items():
                    sess.write(name, value)
                start = time.perf_counter()
                sess.run()  # the first call: shader pipelines, and in graph_capture mode the capture
                first_ms = (time.perf_counter() - start) * 1000
            except Exception as e:  # noqa: BLE001 - any failure of a mode is a finding: record it, try the next
                tried.append({"mode": mode, "all_nodes_on_webgpu": strict,
                              "error": " ".join(f"{type(e).__name__}: {e}".split())[:600]})
                print(f"  {path.stem}: {mode} (strict={strict}) failed: {tried[-1]['error'][:300]}", flush=True)
                continue
            return sess, {"mode": mode, "all_nodes_on_webgpu": strict, "failed_modes": tried,
                          "session_s": round(open_s, 2), "first_ms": round(first_ms, 2)}
    raise WebsdError(f"ONNX Runtime's WebGPU EP could not run {path.name} in any mode: "
                     + "; ".join(f"{t['mode']}: {t['error'][:200]}" for t in tried))


def count_dispatches(path: Path, device, example: dict[str, np.ndarray]) -> int:
    """Compute dispatches in one warm call: at the verbose log level the EP logs each program it starts (to fd 2,
    caught in a temp file). Counted without graph capture, whose replays log nothing; the second call is counted,
    as the first also prepares weights."""
    marker = b"websd: second call\n"
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            sess = PeerSession(path, device, "io_binding", strict=False, log_level=0)
            for name, value in example.items():
                sess.write(name, value)
            sess.run()
            os.write(2, marker)
            sess.run()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        text = log.read()
    return text.split(marker, 1)[1].count(b"Starting program")


def time_calls(sess: PeerSession, repeats: int) -> dict:
    """Warm calls on inputs already written (the output read back each time), in ms."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run()
        times.append((time.perf_counter() - start) * 1000)
    return {"warm_ms": [round(t, 3) for t in times], "warm_median_ms": round(statistics.median(times), 3),
            "warm_min_ms": round(min(times), 3)}


class ImageMaker:
    """A whole image from the ORT submodels, stepped as diffusers' StableDiffusionPipeline steps it."""

    def __init__(self, sessions: dict[str, PeerSession], model_dir: Path, tokenizer_dir: Path):
        import diffusers

        from pipeline.page.reference import SCHEDULER_CLASSES
        from pipeline.page.tokenizer import clip_tokenizer

        self.sessions = sessions
        self.tokenizer = clip_tokenizer(source=tokenizer_dir)
        self.scheduler = getattr(diffusers, SCHEDULER_CLASSES["dpm++2m"]).from_pretrained(model_dir / "scheduler")
        self.first: dict[str, dict] | None = None  # each submodel's first call, recorded by the first image

    def _call(self, sub: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
        sess = self.sessions[sub]
        for name, value in inputs.items():
            sess.write(name, value)
        out = sess.run()
        if self.first is not None and sub not in self.first:  # the values the EP got (cast to its dtypes)
            self.first[sub] = {"inputs": {n: np.ascontiguousarray(v, dtype=sess.inputs[n][1]) for n, v in
                                          inputs.items()}, "output": out}
        return out

    def image(self, prompt: str, negative: str, guidance: float, steps: int, latents: np.ndarray) -> np.ndarray:
        import torch

        from pipeline.page.tokenizer import encode_prompts

        ids = np.asarray(encode_prompts(self.tokenizer, [negative, prompt]), dtype=np.int32)  # row 0: uncond
        text_emb = self._call("clip", {"input_ids": ids})
        self.scheduler.set_timesteps(steps)
        sample = torch.from_numpy(latents.astype(np.float32)) * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps:
            model_input = self.scheduler.scale_model_input(sample, t)
            noise = self._call("unet", {"latents": model_input.numpy(), "timestep": np.array([float(t)], np.float32),
                                        "text_emb": text_emb, "guidance_scale": np.array([guidance])})
            sample = self.scheduler.step(torch.from_numpy(noise.astype(np.float32)), t, sample).prev_sample
        pixels = self._call("vae", {"latents": sample.numpy()})
        return pixels.astype(np.float32)[0]


def write_io(io_dir: Path, first: dict[str, dict]) -> None:
    """Each submodel's first call as the runner writes it (io.json: inputs in argument order, float32 floats)."""
    with atomic_path(io_dir) as work:
        work.mkdir(parents=True)
        io = {}
        for sub, call in first.items():
            specs = []
            for i, value in enumerate(call["inputs"].values()):
                value = value.astype(np.float32) if value.dtype.kind == "f" else value
                value.tofile(work / f"{sub}.in{i}.bin")
                specs.append({"shape": list(value.shape), "dtype": str(value.dtype), "file": f"{sub}.in{i}.bin"})
            out = call["output"].astype(np.float32)
            out.tofile(work / f"{sub}.out.bin")
            io[sub] = {"inputs": specs, "output": {"shape": list(out.shape), "dtype": "float32",
                                                   "file": f"{sub}.out.bin"}}
        (work / "io.json").write_text(json.dumps(io, indent=1))


def onnx_dir_for(cache: Path, manifest: dict) -> Path:
    """Where a site's model is exported: one directory per model, seed, dtype and size."""
    m = manifest
    return cache / "ort" / f"{m['model']}-seed{m.get('seed', 0)}-{m['dtype']}-{m['width']}x{m['height']}"


def bench(site: Path, cache: Path, latents_file: Path, out: Path, *, prompt: str, negative: str, guidance: float,
          steps: int, images: int, repeats: int) -> dict:
    manifest = json.loads((site / "model" / "manifest.json").read_text())
    dtype = manifest["dtype"]
    cfg = load_config(cli={"model.name": manifest["model"], "model.dtype": dtype,
                           "model.seed": manifest.get("seed", 0), "model.width": manifest["width"],
                           "model.height": manifest["height"],
                           "paths.cache": str(cache)})
    model_dir = models.weights_dir(cfg)
    if not (model_dir / hf.STAMP).exists():
        hf.materialize(cfg)
    device = ep_device()
    result = {"commit": commit(), "dtype": dtype, "width": manifest["width"], "height": manifest["height"],
              "steps": steps,
              "versions": versions(),
              "device": describe_device(device), "attention": "SDPA (AttnProcessor2_0) in unet and vae, eager in clip",
              "export_recipe": f"torch.onnx.export(dynamo=True, external_data=True, opset_version={OPSET})",
              "timing": "each call until its output is on the host; medians of warm calls and of whole images"}
    onnx_dir = onnx_dir_for(cache, manifest)
    result["export"] = export_all(cfg, dtype, onnx_dir)
    sessions, result["calls"] = {}, {}
    for sub in submodels.names():
        example = example_inputs(cfg, sub, dtype)
        sess, info = open_best(onnx_dir / f"{sub}.onnx", device, example)
        info.update(time_calls(sess, repeats))
        info["dispatches_per_call"] = count_dispatches(onnx_dir / f"{sub}.onnx", device, example)
        sessions[sub], result["calls"][sub] = sess, info
        print(f"  ORT {sub}: {info['mode']} (all nodes on WebGPU: {info['all_nodes_on_webgpu']}), session "
              f"{info['session_s']} s, first {info['first_ms']:.1f} ms, warm median {info['warm_median_ms']} ms, "
              f"{info['dispatches_per_call']} dispatches per call", flush=True)
    maker = ImageMaker(sessions, model_dir, site / "model" / "tokenizer")
    latents = np.fromfile(latents_file, dtype="<f4").reshape(
        1, manifest["latent_channels"], manifest["latent_height"], manifest["latent_width"])
    maker.first = {}
    pixels = maker.image(prompt, negative, guidance, steps, latents)  # untimed: records the first calls
    first, maker.first = maker.first, None
    times = []
    for _ in range(images):
        start = time.perf_counter()
        pixels = maker.image(prompt, negative, guidance, steps, latents)
        times.append(time.perf_counter() - start)
    calls = result["calls"]
    result.update(images_s=[round(t, 4) for t in times], seconds_per_image_median=round(statistics.median(times), 4),
                  seconds_per_image_parts=round((calls["clip"]["warm_median_ms"] + steps * calls["unet"]
                                                 ["warm_median_ms"] + calls["vae"]["warm_median_ms"]) / 1000, 4),
                  pixels_finite=bool(np.isfinite(pixels).all()))
    out.mkdir(parents=True, exist_ok=True)
    write_io(out / "io", first)
    with atomic_write(out / "pixels.f32", "wb") as f:
        f.write(np.ascontiguousarray(pixels, dtype="<f4").tobytes())
    write_json(out / "result.json", result)
    print(f"  ORT image: median {result['seconds_per_image_median']} s over {images} "
          f"(parts: {result['seconds_per_image_parts']} s)", flush=True)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="where the model is made from its seed, and the ONNX")
    ap.add_argument("--latents", type=Path, required=True, help="the initial latents, float32 (as the runner's)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--negative", required=True)
    ap.add_argument("--guidance", type=float, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10, help="warm calls timed per submodel")
    args = ap.parse_args(argv)
    try:
        bench(args.site.resolve(), args.cache.resolve(), args.latents, args.out, prompt=args.prompt,
              negative=args.negative, guidance=args.guidance, steps=args.steps, images=args.images,
              repeats=args.repeats)
    except WebsdError as e:
        print(f"ort_peer: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(entry: dict, torch_ref: dict | None) -> dict:
    """websd against PyTorch (same dtype) and against ORT, and ORT against PyTorch: per image and per UNet step.

    A ratio above 1 means the first is slower. Absent figures (a failed side) give None."""
    runner, ort, torch_ref = entry.get("runner", {}), entry.get("ort", {}), torch_ref or {}
    websd_image = runner.get("seconds_per_image_warm_median") or runner.get("seconds_per_image_median")
    websd_unet = runner.get("calls", {}).get("unet", {}).get("warm_median_ms")
    ort_image = ort.get("seconds_per_image_median")
    ort_unet = ort.get("calls", {}).get("unet", {}).get("warm_median_ms")
    return {"websd_vs_pytorch_image": _ratio(websd_image, torch_ref.get("image_s")),
            "websd_vs_pytorch_unet_step": _ratio(websd_unet, torch_ref.get("unet_step_ms")),
            "websd_vs_ort_image": _ratio(websd_image, ort_image),
            "websd_vs_ort_unet_step": _ratio(websd_unet, ort_unet),
            "ort_vs_pytorch_image": _ratio(ort_image, torch_ref.get("image_s")),
            "ort_vs_pytorch_unet_step": _ratio(ort_unet, torch_ref.get("unet_step_ms"))}


def markdown_lines(report: dict, name) -> list[str]:
    """bench_webgpu.py's report section for the peer (nothing when no site ran it); ``name`` labels a site."""
    entries = [s for s in report["sites"] if "ort" in s]
    if not entries:
        return []

    def x(v):
        return f"{v:.2f}x" if v else "-"

    lines = ["", "ONNX Runtime WebGPU EP (same run, same weights, prompt and latents; medians; a call ends with its "
                 "output on the host):", "",
             "| site | ORT mode (clip / unet / vae) | clip ms | unet step ms | vae ms | s per image (parts) |"
             " websd/ORT image | websd/ORT unet step | websd/PyTorch image | websd/PyTorch unet step |"
             " ORT/PyTorch image | ORT PSNR dB / max abs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in entries:
        o = s["ort"]
        if "error" in o or "skipped" in o:
            why = f"failed: {o['error'][:200]}" if "error" in o else f"not run: {o['skipped'][:200]}"
            lines.append(f"| {name(s)} | {why} |" + " |" * 10)
            continue
        c, r, img = o["calls"], ratios(s, report.get("torch", {}).get(s["dtype"])), o.get("image", {})
        modes = " / ".join(c[k]["mode"] + ("" if c[k]["all_nodes_on_webgpu"] else " (CPU fallback)") for k in c)
        lines.append(
            f"| {name(s)} | {modes} | {c['clip']['warm_median_ms']:.1f} | {c['unet']['warm_median_ms']:.1f} | "
            f"{c['vae']['warm_median_ms']:.1f} | {o['seconds_per_image_median']:.3f} "
            f"({o['seconds_per_image_parts']:.3f}) | {x(r['websd_vs_ort_image'])} | {x(r['websd_vs_ort_unet_step'])} | "
            f"{x(r['websd_vs_pytorch_image'])} | {x(r['websd_vs_pytorch_unet_step'])} | "
            f"{x(r['ort_vs_pytorch_image'])} | {img.get('psnr_db', float('nan')):.1f} / "
            f"{img.get('max_abs_diff', float('nan')):.3f} |")
    for s in entries:
        o = s["ort"]
        if "error" in o or "skipped" in o:
            continue
        d, v = o["device"], o["versions"]
        lines.append(f"- {name(s)}: onnxruntime {v['onnxruntime']} + onnxruntime-ep-webgpu {v['onnxruntime-ep-webgpu']}"
                     f", export with torch {v['torch']} / onnxscript {v['onnxscript']}; EP device {d['type']} "
                     f"{d['vendor']} (vendor 0x{d['vendor_id']:04x}, device 0x{d['device_id']:04x})"
                     + (", software adapter allowed" if d["software_adapter_allowed"] else ""))
        lines.append("  - dispatches per call: " + ", ".join(f"{k} {c.get('dispatches_per_call')}"
                                                              for k, c in o["calls"].items()))
        if o.get("image"):
            img = o["image"]
            wrong = "all fail it" if img["wrong_inputs_fail_bar"] else "SOME PASS IT"
            lines.append(f"  - image against diffusers float32: {'PASSES' if img['passes_bar'] else 'FAILS'} the bar; "
                         f"references with a wrong input {wrong}")
        if o.get("submodel_errors"):
            lines.append("  - max abs error per submodel: " + ", ".join(
                f"{k} {e['max_abs_err']:.3g} (of max |ref| {e['ref_max_abs']:.3g})"
                for k, e in o["submodel_errors"].items()))
        for sub, call in o["calls"].items():
            for failed in call["failed_modes"]:
                lines.append(f"  - {sub}: {failed['mode']} (all nodes on WebGPU required: "
                             f"{failed['all_nodes_on_webgpu']}) failed: {failed['error'][:300]}")
    return lines
