"""The headless GPU runner (web/runner/run.mjs) and its benchmark (benchmarks/bench_webgpu.py) on this CPU-only
machine: Dawn on lavapipe (the software Vulkan driver ./setup.sh unpacks into .venv/lavapipe).

* Dawn finds and describes the software adapter (runs wherever setup.sh ran, CI included).
* With a real TVM source (a mirror), the tiny model's site goes through the whole benchmark: the page's modules
  generate the image on lavapipe, and it must match diffusers (CPU, float32) on the same weights, prompt and
  latents - PSNR >= 30 dB and max abs diff <= 1/255 - while the references made with one input wrong must miss
  the benchmark's bar (PSNR >= 30 dB and max abs <= 2/255); each submodel's first call must match its torch
  wrapper.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, real_env, run_doit, runner_env  # tests/conftest.py; also the `node` fixture
from pipeline.layout import Layout

RUNNER = ROOT / "web" / "runner" / "run.mjs"
def test_dawn_describes_the_software_adapter(node):
    proc = subprocess.run([node, str(RUNNER), "--list-adapter"], cwd=ROOT, env=runner_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "adapter: mesa software llvmpipe" in proc.stdout
    limits = dict(kv.split("=") for kv in proc.stdout.split("limits: ")[1].splitlines()[0].split())
    assert int(limits["maxStorageBuffersPerShaderStage"]) >= 8
    assert "shader-f16: true" in proc.stdout  # lavapipe has it, so float16 builds can be run here too


def _fake_site(root):
    """A site with the real page modules' inputs (manifest, tokenizer, verified files) and a stand-in tvmjs."""
    import hashlib

    from pipeline.fsutil import write_json
    from pipeline.models.schedules import SD1_SCHEDULER
    from pipeline.page.tokenizer import write_clip_tokenizer

    model = root / "model"
    write_clip_tokenizer(model / "tokenizer")
    files = {}
    for i, sub in enumerate(("clip", "unet", "vae")):
        (model / f"{sub}.wasm").write_bytes(b"\0asm" + sub.encode())
        params = model / "params" / sub
        params.mkdir(parents=True)
        # every file distinct (the weight cache keys by sha256: equal files would be one entry)
        (params / "params_shard_0.bin").write_bytes(bytes(range(i, i + 8)))
        write_json(params / "tensor-cache.json", {"metadata": {"param_names": ["w"], "of": sub}, "records": [
            {"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": 8, "records": [
                {"name": "w", "shape": [2], "dtype": "float32", "format": "raw", "nbytes": 8, "byteOffset": 0}]}]})
    for path in sorted(model.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            files[str(path.relative_to(model))] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_json(model / "manifest.json", {
        "model": "fake", "seed": 0, "dtype": "float32", "width": 16, "height": 16, "latent_width": 2,
        "latent_height": 2, "latent_channels": 4,
        "max_length": 77, "scheduler": {"_class_name": "DPMSolverMultistepScheduler", **SD1_SCHEDULER[1]},
        "submodels": {s: {"wasm": f"{s}.wasm", "params": f"params/{s}/", "function": s} for s in ("clip", "unet", "vae")},
        "tokenizer": {n.split(".")[0]: f"tokenizer/{n}" for n in ("vocab.json", "merges.txt", "tokenizer.json",
                                                                  "tokenizer_config.json")},
        "requires_f16": False, "required_limits": {"maxStorageBuffersPerShaderStage": 4}, "files": files})
    (root / "tvmjs.bundle.js").write_text((ROOT / "tests" / "web" / "fake_tvmjs.cjs").read_text())
    return root


def test_runner_code_path_on_a_stand_in_runtime(node, tmp_path):
    """Everything but TVM's wasm: Dawn's device on lavapipe with the manifest's limits, the verified load, the
    tokenizer, the scheduler loop, the timings, the PNG and the per-submodel dumps."""
    import numpy as np
    from PIL import Image

    site = _fake_site(tmp_path / "site")
    out = tmp_path / "out"
    proc = subprocess.run([node, str(RUNNER), "--site", str(site), "--out", str(out), "--steps", "5", "--images",
                           "2", "--warm", "2", "--cache-dir", str(tmp_path / "weights")], cwd=ROOT,
                          env=runner_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    # --cache-dir: the first load fetched every file it reads and stored it, the second read them all from there
    first, second = result["load"]["files"], result["second_load"]["files"]
    read = 2 + 3 * 3  # tokenizer.json and its config; per submodel the wasm, tensor-cache.json and one shard
    assert (first["fetched_files"], first["stored_files"], first["cached_files"]) == (read, read, 0), first
    assert (second["fetched_files"], second["cached_files"], second["dropped"]) == (0, read, []), second
    assert len(list((tmp_path / "weights").iterdir())) == read
    assert "second load: " in proc.stdout
    assert result["calls"]["unet"]["warm_calls"] == 2 * 5 - 1 and result["calls"]["vae"]["warm_calls"] == 1 + 2
    assert len(result["image_seconds"]) == 2 and result["load"]["download_ms"] >= 0
    assert set(result["load"]["per_submodel_ms"]) == {"clip", "unet", "vae"}
    pixels = np.asarray(Image.open(out / "image.png"))
    assert pixels.shape == (16, 16, 4) and (pixels[..., :3] == 128).all() and (pixels[..., 3] == 255).all()
    io = json.loads((out / "io" / "io.json").read_text())
    ids = np.fromfile(out / "io" / io["clip"]["inputs"][0]["file"], dtype="int32").reshape(2, 77)
    assert ids[1, 0] == 49406 and 49407 in ids[1]  # the prompt row: <|startoftext|> ... <|endoftext|>
    # the stand-in's kernels ran on lavapipe through the page's replayed launch path (web/src/launch.js)
    unet_in = np.fromfile(out / "io" / io["unet"]["inputs"][0]["file"], dtype="float32")
    unet_out = np.fromfile(out / "io" / io["unet"]["output"]["file"], dtype="float32")
    assert np.array_equal(unet_out, 0.5 * unet_in) and np.abs(unet_in).max() > 0
    assert result["launch"] == "replay"
    unet = result["calls"]["unet"]
    # a warm unet call: 3 launches in 2 passes (a copy within the GPU between them), bind groups only for the
    # call's new input and output tensors, no scalar writes (the writes are the inputs' uploads)
    uploads = len(io["unet"]["inputs"])
    assert unet["webgpu_ops_per_call"] == {"dispatches": 3, "bind_groups": 2, "passes": 2, "submits": 2,
                                           "writes": uploads, "reads": 1}, unet
    assert unet["launch_per_call"]["launches"] == 3 and unet["launch_per_call"]["slotsWritten"] == 0, unet
    assert unet["launch_per_call"]["fallback"] is None
    # tvmjs' own launch (the stand-in's copy of it) on the same inputs: the same bytes, a pass and write per launch
    plain = tmp_path / "plain"
    proc = subprocess.run([node, str(RUNNER), "--site", str(site), "--out", str(plain), "--steps", "5", "--images",
                           "1", "--warm", "1", "--launch", "plain"], cwd=ROOT, env=runner_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for sub in ("clip", "unet", "vae"):
        assert (plain / "io" / f"{sub}.out.bin").read_bytes() == (out / "io" / f"{sub}.out.bin").read_bytes(), sub
    plain_ops = json.loads((plain / "result.json").read_text())["calls"]["unet"]["webgpu_ops_per_call"]
    assert plain_ops["passes"] == plain_ops["bind_groups"] == 3 and plain_ops["writes"] == uploads + 3, plain_ops
    # a tampered file is refused by the page's own integrity check
    (site / "model" / "params" / "unet" / "params_shard_0.bin").write_bytes(bytes(8))
    proc = subprocess.run([node, str(RUNNER), "--site", str(site)], cwd=ROOT, env=runner_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "params_shard_0.bin is corrupt" in proc.stderr


@pytest.mark.parametrize("second_load", [False, True], ids=["one-load", "cached-second-load"])
def test_profile_times_each_replayed_launch(node, tmp_path, second_load):
    """--profile times passes: while it profiles, the replay path gives each launch a pass of its own. With
    --cache-dir the runner loads twice, each load on a device of its own, and the profiled image runs on the second
    (on the H200 the queries stayed on the first device: "While validating timestampWrites", and the run failed)."""
    site = _fake_site(tmp_path / "site")
    out = tmp_path / "out"
    cache = ["--cache-dir", str(tmp_path / "weights")] if second_load else []
    proc = subprocess.run([node, str(RUNNER), "--site", str(site), "--out", str(out), "--steps", "3", "--images", "1",
                           "--warm", "1", "--profile", *cache], cwd=ROOT, env=runner_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    if "profile" not in result:
        pytest.skip("this adapter has no timestamp-query: nothing to profile")
    kernels = {k["kernel"]: k["calls"] for k in result["profile"]["unet"]["kernels"]}
    assert kernels == {"scale": 2 * 3, "add": 3}, kernels
    assert result["calls"]["unet"]["webgpu_ops_per_call"]["passes"] == 2  # the timed images: one pass per call


def test_a_missing_site_is_one_line(node, tmp_path):
    proc = subprocess.run([node, str(RUNNER), "--site", str(tmp_path / "nothing")], cwd=ROOT, env=runner_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("runner: ") and "manifest.json" in last and "doit site" in last


@pytest.mark.tvm_source
@pytest.mark.slow
def test_benchmark_on_lavapipe_matches_diffusers(node, real_cache, tmp_path):
    res = run_doit("site", env=real_env(real_cache, WEBSD_MODEL_NAME="tiny", WEBSD_MODEL_DTYPE="float32",
                                        WEBSD_MODEL_IMAGE_SIZE="0"), timeout=3 * 3600)
    assert res.returncode == 0, res.output[-20000:]
    site = Layout(real_cache, "tiny", "float32", "default").site_dir
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_webgpu.py"), "--site", str(site),
                           "--node", node, "--images", "1", "--warm", "1", "--no-torch", "--work", str(tmp_path),
                           "--results", str(tmp_path / "results")], cwd=ROOT, env=runner_env(),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-10000:] + proc.stderr[-5000:]
    report = json.loads((tmp_path / "results" / "webgpu-tiny-cpu.json").read_text())
    (entry,) = report["sites"]
    run = entry["runner"]
    assert run["adapter"]["architecture"] == "software"
    assert run["load"]["pipelines_ms"] > 0 and run["calls"]["unet"]["warm_calls"] >= 19
    image = entry["image"]
    print(json.dumps({k: v for k, v in image.items()}, indent=1))
    assert image["psnr_db"] >= 30 and image["max_abs_diff"] <= 1.0, image
    assert image["passes_bar"] and image["wrong_inputs_fail_bar"], image
    for sub, err in entry["submodel_errors"].items():
        assert err["max_abs_err"] <= 1e-3 * max(1.0, err["ref_max_abs"]), (sub, err)
    assert (tmp_path / "run-tiny-float32" / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
