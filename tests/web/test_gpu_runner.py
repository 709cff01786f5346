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
import re
import subprocess
import sys

import pytest

from conftest import ROOT, real_env, run_doit, runner_env  # tests/conftest.py; also the `node` fixture
from pipeline.layout import Layout

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_webgpu  # noqa: E402

RUNNER = ROOT / "web" / "runner" / "run.mjs"
SUBGROUP_MATRIX = "chromium-experimental-subgroup-matrix"
# The stand-in's "scale" kernel (out = x * factor, tests/web/fake_tvmjs.cjs) computed differently: each workgroup
# takes an 8x8 tile of 64 elements (the launch's grid is n / 64 workgroups) as one f32 subgroup matrix, adds
# 0 x 0 on the f16->f32 8x8x8 matrix unit, and scales the result matrix; a last, partial tile is done per element.
# The same bindings and uniform: a drop-in swap, exact in f32, so the outputs must be bit-identical to the default.
SCALE_WITH_SUBGROUP_MATRICES = """enable f16;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read_write> out : array<f32>;
@group(0) @binding(1) var<storage, read> x : array<f32>;
struct PODArgs { n : i32, factor : f32, packGridDimX : u32 }
@group(0) @binding(2) var<uniform> podArgs : PODArgs;
@compute @workgroup_size(8, 1, 1)
fn scale(@builtin(workgroup_id) b : vec3<u32>, @builtin(num_workgroups) nb : vec3<u32>,
    @builtin(local_invocation_id) t : vec3<u32>) {
  let base = (b.z * nb.x + b.x) * 64u;
  if (base + 64u <= u32(podArgs.n)) {
    let tile = subgroupMatrixLoad<subgroup_matrix_result<f32, 8, 8>>(&x, base, false, 8u);
    let sum = subgroupMatrixMultiplyAccumulate(subgroup_matrix_left<f16, 8, 8>(),
                                               subgroup_matrix_right<f16, 8, 8>(), tile);
    subgroupMatrixStore(&out, base, subgroupMatrixScalarMultiply(sum, podArgs.factor), false, 8u);
  } else {
    for (var j = 0u; j < 8u; j++) {
      let i = base + t.x * 8u + j;
      if (i < u32(podArgs.n)) { out[i] = x[i] * podArgs.factor; }
    }
  }
}
"""
def test_dawn_describes_the_software_adapter(node):
    proc = subprocess.run([node, str(RUNNER), "--list-adapter"], cwd=ROOT, env=runner_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "adapter: mesa software llvmpipe" in proc.stdout
    limits = dict(kv.split("=") for kv in proc.stdout.split("limits: ")[1].splitlines()[0].split())
    assert int(limits["maxStorageBuffersPerShaderStage"]) >= 8
    assert "shader-f16: true" in proc.stdout  # lavapipe has it, so float16 builds can be run here too


def _fake_site(root, size=16, unet_kernels=None):
    """A site with the real page modules' inputs (manifest, tokenizer, verified files) and a stand-in tvmjs.
    ``unet_kernels`` ({kernel name: WGSL}): the site also has a subgroup-matrix variant of the unet, as issue 20's
    build writes it (manifest ``variants``: its own .wasm and kernels file, the default build's weights)."""
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
    variants = []
    if unet_kernels is not None:
        own = model / "variants" / "subgroup-matrix"
        own.mkdir(parents=True)
        (own / "unet.wasm").write_bytes(b"\0asm" + b"unet-subgroup-matrix")
        write_json(own / "unet.kernels.json", unet_kernels)
        variants = [{"name": "subgroup-matrix",
                     "requires": {"features": [SUBGROUP_MATRIX, "shader-f16"],
                                  "subgroup_matrix_configs": [{"componentType": "f16", "resultComponentType": "f32",
                                                               "M": 8, "N": 8, "K": 8}]},
                     "submodels": {"unet": {"wasm": "variants/subgroup-matrix/unet.wasm",
                                            "kernels": "variants/subgroup-matrix/unet.kernels.json"}}}]
    for path in sorted(model.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            files[str(path.relative_to(model))] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_json(model / "manifest.json", {
        "model": "fake", "seed": 0, "dtype": "float32", "width": size, "height": size, "latent_width": size // 8,
        "latent_height": size // 8, "latent_channels": 4, **({"variants": variants} if variants else {}),
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


def _run(node, site, out, *args, timeout=300):
    return subprocess.run([node, str(RUNNER), "--site", str(site), "--out", str(out), "--steps", "2", "--images", "1",
                           "--warm", "1", *args], cwd=ROOT, env=runner_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_a_site_with_a_subgroup_matrix_variant_runs_its_default_on_plain_lavapipe_and_says_why(node, tmp_path,
                                                                                               monkeypatch):
    site = _fake_site(tmp_path / "site", size=72, unet_kernels={"scale": SCALE_WITH_SUBGROUP_MATRICES})
    proc = _run(node, site, tmp_path / "out", "--dawn-feature", "allow_unsafe_apis")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["variant"] == "default" and result["kernel_overrides"] == {}
    assert result["variant_reason"].startswith(f"this GPU adapter does not offer {SUBGROUP_MATRIX} ("), result
    assert f"variant: default (this GPU adapter does not offer {SUBGROUP_MATRIX}" in proc.stdout
    proc = subprocess.run([node, str(RUNNER), "--list-adapter", "--site", str(site)], cwd=ROOT, env=runner_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"variant subgroup-matrix: lacks {SUBGROUP_MATRIX}" in proc.stdout and "variant default: runs" in proc.stdout
    monkeypatch.setenv("VK_ICD_FILENAMES", runner_env()["VK_ICD_FILENAMES"])  # the benchmark runs in runner_env()
    assert bench_webgpu.runnable_variants(node, site, ["allow_unsafe_apis"]) == ["default"]  # --variants all's rows
    # forced, it stops in one line that names what the adapter lacks
    proc = _run(node, site, tmp_path / "forced", "--variant", "subgroup-matrix")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"runner: variant=subgroup-matrix: this GPU adapter does not offer {SUBGROUP_MATRIX}"), proc.stderr


def test_lavapipe_with_subgroup_matrices_runs_the_variants_kernels_with_the_same_output(node_sm, tmp_path):
    """Mesa 26's lavapipe offers chromium-experimental-subgroup-matrix (with Dawn's allow_unsafe_apis): the variant is
    picked, its unet .wasm loads and its WGSL replaces the stand-in's "scale" kernel, and the outputs are the
    default build's, bit for bit."""
    import numpy as np

    site = _fake_site(tmp_path / "site", size=72, unet_kernels={"scale": SCALE_WITH_SUBGROUP_MATRICES})
    unsafe = ["--dawn-feature", "allow_unsafe_apis"]
    proc = _run(node_sm, site, tmp_path / "variant", *unsafe, "--cache-dir", str(tmp_path / "weights"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "variant" / "result.json").read_text())
    assert result["variant"] == "subgroup-matrix", result["variant_reason"]
    # bench_webgpu.py --variants all: a row for each build this adapter runs, the fastest first
    assert bench_webgpu.runnable_variants(node_sm, site, unsafe[1:]) == ["subgroup-matrix", "default"]
    assert bench_webgpu.runnable_variants(node_sm, site, []) == ["default"]
    assert result["variant_reason"] == (f"this GPU adapter offers {SUBGROUP_MATRIX}, shader-f16 and f16->f32 8x8x8 "
                                        "subgroup matrices")
    assert result["kernel_overrides"] == {"unet": {"kernels": 1, "applied": 1, "unused": []}}
    assert "unet: 1 of 1 kernels from the variant's WGSL" in proc.stdout
    # the variant's two files were read, and the shared weights: tokenizer 2 + clip/vae 3 each + unet 4
    assert result["load"]["files"]["fetched_files"] == 2 + 3 + 3 + 4
    assert {c["componentType"] + c["resultComponentType"] for c in result["adapter"]["subgroup_matrix_configs"]} >= \
        {"f16f32", "f16f16"}
    proc = _run(node_sm, site, tmp_path / "default", *unsafe, "--variant", "default")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "default" / "result.json").read_text())["variant_reason"] == \
        "asked for (variant=default)"
    io = json.loads((tmp_path / "variant" / "io" / "io.json").read_text())
    unet_in = np.fromfile(tmp_path / "variant" / "io" / io["unet"]["inputs"][0]["file"], dtype="float32")
    assert unet_in.size == 4 * 9 * 9  # 5 whole 8x8 tiles through the matrices, the last 4 elements one by one
    for sub in ("clip", "unet", "vae"):
        assert (tmp_path / "variant" / "io" / f"{sub}.out.bin").read_bytes() == \
            (tmp_path / "default" / "io" / f"{sub}.out.bin").read_bytes(), sub
    unet_out = np.fromfile(tmp_path / "variant" / "io" / "unet.out.bin", dtype="float32")
    assert np.array_equal(unet_out, 0.5 * unet_in) and np.abs(unet_in).max() > 0
    # without Dawn's toggle the same adapter hides the feature: the default runs, and the reason says how to get it
    proc = _run(node_sm, site, tmp_path / "no-toggle")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reason = json.loads((tmp_path / "no-toggle" / "result.json").read_text())["variant_reason"]
    assert reason.startswith(f"this GPU adapter does not offer {SUBGROUP_MATRIX}") and "allow_unsafe_apis" in reason


@pytest.mark.tvm_source
@pytest.mark.slow
def test_subgroup_matrix_variant_of_the_tiny_model_matches_diffusers(node_sm, real_cache, tmp_path):
    """The whole subgroup-matrix kernel set (pipeline/webgpu/subgroup_matrix/: its matmul, convolution and attention
    twins, their WGSL overrides, the page's pick and shader swap) on Mesa 26's lavapipe, built for its 8x8x8 matrices:
    each build of the site, default and variant, passes the benchmark's bar against diffusers."""
    env = real_env(real_cache, WEBSD_MODEL_NAME="tiny", WEBSD_MODEL_DTYPE="float16", WEBSD_MODEL_IMAGE_SIZE="0",
                   WEBSD_WEBGPU_VARIANTS="subgroup-matrix", WEBSD_WEBGPU_SUBGROUP_MATRIX="lavapipe")
    res = run_doit("site", env=env, timeout=3 * 3600)
    assert res.returncode == 0, res.output[-20000:]
    site = Layout(real_cache, "tiny", "float16", "default").site_dir
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_webgpu.py"), "--site", str(site),
                           "--node", node_sm, "--images", "1", "--warm", "0", "--no-torch", "--variants", "all",
                           "--work", str(tmp_path), "--results", str(tmp_path / "results")], cwd=ROOT,
                          env=runner_env(), capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-10000:] + proc.stderr[-5000:]
    report = json.loads((tmp_path / "results" / "webgpu-tiny-cpu.json").read_text())
    rows = {row["label"].split(":")[-1]: row for row in report["sites"]}
    assert set(rows) == {"default", "subgroup-matrix"}, list(rows)
    overrides = rows["subgroup-matrix"]["runner"]["kernel_overrides"]
    assert overrides["unet"]["applied"] > 0 and overrides["vae"]["applied"] > 0, overrides  # convs and matmuls
    kernels = {sub: json.loads((site / "model" / "variants" / "subgroup-matrix" / f"{sub}.kernels.json").read_text())
               for sub in ("unet", "vae")}
    # the UNet's self- and cross-attention (head dim 4 zero padded to 8 around the twin, 77 keys)
    assert any(re.fullmatch(r"sgattn_\d+x\d+x\d+x\d+x8s4_kernel", name) for name in kernels["unet"]), kernels["unet"]
    # the cross-attention's keys and values from 2 x 77 text tokens: rows zero padded to 160 (padded_rows)
    assert any(name.startswith("sgmm_1x160x") for name in kernels["unet"]), kernels["unet"]
    # the VAE's single-head attention as two matmuls (split_single_head_attention) on GEMM twins: the scores
    # (tokens x tokens) and the values (reduction over the tokens)
    for gemm in (r"sgmm_1x(\d+)x\1x\d+_b_kernel", r"sgmm_1x(\d+)x\d+x\1_b_kernel"):
        assert any(re.fullmatch(gemm, name) for name in kernels["vae"]), (gemm, kernels["vae"])
    for name, row in rows.items():
        assert row["image"]["passes_bar"] and row["image"]["wrong_inputs_fail_bar"], (name, row["image"])
