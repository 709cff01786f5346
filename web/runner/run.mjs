#!/usr/bin/env node
// The headless GPU runner: the page's own modules (web/src: loader, pipeline, schedulers, tokenizer, gpu) in Node,
// with WebGPU from Dawn (npm `webgpu`), on a site that `doit` built. It uses whatever adapter Dawn finds: a real
// GPU through Vulkan, or a software one (lavapipe), and reports what a user would wait for: the load (download
// and check, shader pipeline creation, weight upload), each submodel's first and warm call, and seconds per image.
//
//   node web/runner/run.mjs --site cache/site --out /tmp/run [--steps 20] [--images 2] [--warm 5]
//       [--prompt ...] [--negative ...] [--guidance 7.5] [--scheduler dpm++2m] [--seed 0 | --latents noise.f32]
//       [--dawn-feature vulkan_enable_f16_on_nvidia] [--list-adapter] [--profile] [--serial-load]
//
// The submodels load concurrently, as the page loads them (--serial-load: one after another, to compare); the
// load's phases are then busy times summed over submodels, which overlap, so they add up to more than the total.
//
// Writes to --out: result.json (adapter, limits, timings), image.png, pixels.f32 (H x W x 3 float32, 0..255, the
// VAE output before rounding) and io/ (inputs and output of the first call of each submodel, raw little-endian,
// described in io/io.json) for comparing each submodel with PyTorch. Exit status 1 with one line on error.

import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";
import { inspect, parseArgs } from "node:util";

import { create, globals } from "webgpu";

import { PageError, requestDevice, withGpuErrorCheck } from "../src/gpu.js";
import { loadManifest, loadSubmodels, loadTokenizer, Progress, SUBMODELS, TvmSubmodel } from "../src/loader.js";
import { StableDiffusion } from "../src/pipeline.js";
import { encodePng } from "./png.js";
import { installCallCounter, installKernelProfiler } from "./profile.js";

const LIMITS = ["maxStorageBuffersPerShaderStage", "maxStorageBufferBindingSize", "maxBufferSize",
  "maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY", "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupsPerDimension"];

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const round = (x, digits = 2) => (x === null ? null : Number(x.toFixed(digits)));

/** fetch() for file: URLs, as the page's loader calls it (Response with a body stream). */
async function fileFetch(url) {
  try {
    return new Response(await readFile(fileURLToPath(url)));
  } catch (err) {
    if (err.code === "ENOENT") return new Response(null, { status: 404 });
    throw err;
  }
}

/** A submodel wrapper that times every call and keeps the first call's inputs and output. */
function timedModel(model, counter, verbose = false) {
  const calls = [];
  let first = null;
  let perCall = null; // WebGPU operations of the last call (installCallCounter)
  return {
    calls,
    get first() { return first; },
    get perCall() { return perCall; },
    async call(inputs) {
      if (verbose) console.log(`  ${model.name}: call ${calls.length + 1}`);
      const before = counter.snapshot();
      const start = performance.now();
      const out = await model.call(inputs);
      calls.push(performance.now() - start);
      const after = counter.snapshot();
      perCall = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
      if (!first) first = { inputs: inputs.map((x) => ({ ...x, data: x.data.slice() })), output: out };
      return out;
    },
  };
}

function options() {
  const { values } = parseArgs({
    options: {
      site: { type: "string" }, out: { type: "string" },
      prompt: { type: "string", default: "a photo of an astronaut riding a horse" },
      negative: { type: "string", default: "" },
      steps: { type: "string", default: "20" }, guidance: { type: "string", default: "7.5" },
      scheduler: { type: "string", default: "dpm++2m" }, seed: { type: "string", default: "0" },
      latents: { type: "string" }, images: { type: "string", default: "2" }, warm: { type: "string", default: "5" },
      "dawn-feature": { type: "string", multiple: true, default: [] },
      "list-adapter": { type: "boolean", default: false },
      verbose: { type: "boolean", default: false },
      profile: { type: "boolean", default: false },
      "serial-load": { type: "boolean", default: false },
    },
  });
  if (!values.site && !values["list-adapter"]) throw new PageError("--site <directory doit built> is required");
  return values;
}

async function adapterReport(gpu) {
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new PageError("Dawn found no GPU adapter: install a Vulkan driver, or point VK_ICD_FILENAMES at " +
      "lavapipe's ICD file (./setup.sh unpacks one into .venv/lavapipe/lvp_icd.json)");
  }
  const info = adapter.info ?? {};
  return {
    vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
    features: [...adapter.features].sort(),
    limits: Object.fromEntries(LIMITS.map((n) => [n, adapter.limits[n]])),
  };
}

async function main() {
  const o = options();
  Object.assign(globalThis, globals); // GPUBufferUsage, GPUShaderStage, ... as in a browser
  const dawnFlags = o["dawn-feature"].length ? [`enable-dawn-features=${o["dawn-feature"].join(",")}`] : [];
  const gpu = create(dawnFlags);
  const adapter = await adapterReport(gpu);
  console.log(`adapter: ${adapter.vendor} ${adapter.architecture} ${adapter.description || adapter.device}`);
  console.log(`  limits: ${LIMITS.map((n) => `${n}=${adapter.limits[n]}`).join(" ")}`);
  console.log(`  shader-f16: ${adapter.features.includes("shader-f16")}; dawn features: ${o["dawn-feature"]}`);
  if (o["list-adapter"]) return;

  const site = path.resolve(o.site);
  const manifestUrl = pathToFileURL(path.join(site, "model", "manifest.json"));
  const loadStart = performance.now();
  const manifest = await loadManifest(manifestUrl.href, fileFetch);
  let tvmjs;
  try {
    tvmjs = createRequire(import.meta.url)(path.join(site, "tvmjs.bundle.js"));
  } catch (err) {
    throw new PageError(`${site}/tvmjs.bundle.js does not load (${err.code ?? err.message}): rebuild the site ` +
      "with `doit site`");
  }
  const { device } = await requestDevice(manifest, gpu, o.profile ? ["timestamp-query"] : []);
  let profiler = null;
  if (o.profile) {
    if (device.features.has("timestamp-query")) profiler = installKernelProfiler(device, globals);
    else console.log("profile: this adapter has no timestamp-query feature; no per-kernel times");
  }
  let lastStage = "";
  const progress = new Progress(0, (p) => {
    if (o.verbose && p.stage !== lastStage) console.log(`  ${(lastStage = p.stage)}`);
  });
  const tokenizer = await loadTokenizer(manifest, manifestUrl, progress, fileFetch);
  let loaded = {};
  if (o["serial-load"]) {  // the page's old way, one submodel after another: to measure what overlap saves
    for (const name of SUBMODELS) {
      loaded[name] = await withGpuErrorCheck(device, `loading ${name}`,
        () => TvmSubmodel.load(tvmjs, device, name, manifest, manifestUrl, progress, fileFetch));
    }
  } else {
    loaded = await withGpuErrorCheck(device, "loading the model",
      () => loadSubmodels(tvmjs, device, manifest, manifestUrl, progress, fileFetch));
  }
  const loadMs = performance.now() - loadStart;
  const load = { total_ms: round(loadMs) };
  for (const phase of ["download", "pipelines", "upload"]) {
    load[`${phase}_ms`] = round(SUBMODELS.reduce((s, n) => s + loaded[n].loadTimes[phase], 0));
  }
  load.per_submodel_ms = Object.fromEntries(SUBMODELS.map((n) => [n, Object.fromEntries(
    Object.entries(loaded[n].loadTimes).map(([k, v]) => [k, round(v)]))]));
  load.concurrent = !o["serial-load"];
  console.log(`load: ${(loadMs / 1000).toFixed(2)} s, ${load.concurrent ? "submodels concurrently" : "one by one"} ` +
    `(busy: download+check ${(load.download_ms / 1000).toFixed(2)} s, shader pipelines ` +
    `${(load.pipelines_ms / 1000).toFixed(2)} s, weight upload ${(load.upload_ms / 1000).toFixed(2)} s)`);

  const counter = installCallCounter(globals);
  const models = Object.fromEntries(SUBMODELS.map((n) => [n, timedModel(loaded[n], counter, o.verbose)]));
  const sd = new StableDiffusion(manifest, tokenizer, models);
  let latents;
  if (o.latents) {
    const raw = await readFile(o.latents);
    latents = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  }
  const settings = { prompt: o.prompt, negativePrompt: o.negative, steps: Number(o.steps),
    guidance: Number(o.guidance), scheduler: o.scheduler, seed: Number(o.seed), latents };
  const imageSeconds = [];
  let image;
  for (let i = 0; i < Number(o.images); i++) {
    const start = performance.now();
    image = await withGpuErrorCheck(device, "generating", () => sd.generate(settings));
    imageSeconds.push((performance.now() - start) / 1000);
    console.log(`image ${i + 1}: ${imageSeconds.at(-1).toFixed(3)} s (${settings.steps} steps)`);
  }
  // more calls of clip and vae on their first inputs, for warm medians (the loop calls the unet enough)
  for (const name of ["clip", "vae"]) {
    for (let i = 0; i < Number(o.warm); i++) await models[name].call(models[name].first.inputs);
  }
  const calls = Object.fromEntries(SUBMODELS.map((n) => {
    const ms = models[n].calls;
    return [n, { first_ms: round(ms[0]), warm_median_ms: round(median(ms.slice(1))), warm_calls: ms.length - 1,
      webgpu_ops_per_call: models[n].perCall }];
  }));
  for (const [n, c] of Object.entries(calls)) {
    const ops = Object.entries(c.webgpu_ops_per_call ?? {}).map(([k, v]) => `${v} ${k}`).join(", ");
    console.log(`${n}: first call ${c.first_ms} ms, warm median ${c.warm_median_ms} ms (${c.warm_calls} calls); ` +
      `per call: ${ops}`);
  }

  const result = {
    adapter, dawn_features: o["dawn-feature"], node: process.version,
    site: { model: manifest.model, dtype: manifest.dtype, image_size: manifest.image_size,
      required_limits: manifest.required_limits ?? null, limits_profile: manifest.limits_profile ?? null },
    settings: { ...settings, latents: o.latents ? path.basename(o.latents) : null },
    load, calls, image_seconds: imageSeconds.map((s) => round(s, 4)),
    seconds_per_image_median: round(median(imageSeconds), 4),
    seconds_per_image_warm_median: round(median(imageSeconds.slice(1)), 4),
  };
  console.log(`seconds per image: median ${result.seconds_per_image_median} (warm ${result.seconds_per_image_warm_median})`);
  if (profiler) {
    // one more image, its every kernel launch timed on the GPU (apart from the timed images: the queries cost)
    const profiled = Object.fromEntries(SUBMODELS.map((n) => [n, { async call(inputs) {
      const out = await loaded[n].call(inputs);
      await profiler.collect(n);
      return out;
    } }]));
    profiler.enabled = true;
    await new StableDiffusion(manifest, tokenizer, profiled).generate(settings);
    profiler.enabled = false;
    result.profile = profiler.report();
    for (const [n, p] of Object.entries(result.profile)) {
      const top = p.kernels.slice(0, 5).map((k) => `${k.kernel} ${k.ms} ms (${(100 * k.share).toFixed(1)}%, ${k.calls}x)`);
      console.log(`profile ${n}: GPU ${p.total_ms} ms per image; top: ${top.join("; ")}`);
    }
  }
  if (o.out) {
    const out = path.resolve(o.out);
    await mkdir(path.join(out, "io"), { recursive: true });
    await writeFile(path.join(out, "image.png"), encodePng(image.rgba, image.width, image.height));
    await writeFile(path.join(out, "pixels.f32"), Buffer.from(image.pixels.buffer, image.pixels.byteOffset,
      image.pixels.byteLength));
    const io = {};
    for (const name of SUBMODELS) {
      const { inputs, output } = models[name].first;
      io[name] = { inputs: [], output: { shape: output.shape, dtype: "float32", file: `${name}.out.bin` } };
      for (const [i, x] of inputs.entries()) {
        const file = `${name}.in${i}.bin`;
        await writeFile(path.join(out, "io", file), Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength));
        io[name].inputs.push({ shape: x.shape, dtype: x.dtype, file });
      }
      await writeFile(path.join(out, "io", `${name}.out.bin`), Buffer.from(output.data.buffer,
        output.data.byteOffset, output.data.byteLength));
    }
    await writeFile(path.join(out, "io", "io.json"), JSON.stringify(io, null, 1));
    await writeFile(path.join(out, "result.json"), JSON.stringify(result, null, 1));
    console.log(`wrote ${out}/result.json, image.png, pixels.f32, io/`);
  }
}

main().then(() => process.exit(0), (err) => {
  const text = err instanceof PageError ? err.message
    : (err instanceof Error ? err.stack : inspect(err, { depth: 4, breakLength: Infinity }));
  console.error(`runner: ${text.split("\n").join(process.env.WEBSD_RUNNER_TRACE ? "\n" : " ").slice(0, 2000)}`);
  process.exit(1);
});
