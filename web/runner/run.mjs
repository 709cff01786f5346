#!/usr/bin/env node
// The headless GPU runner: the page's own modules (web/src: loader, pipeline, schedulers, tokenizer, gpu) in Node,
// with WebGPU from Dawn (npm `webgpu`), on a site that `doit` built. It uses whatever adapter Dawn finds: a real
// GPU through Vulkan, or a software one (lavapipe), and reports what a user would wait for: the load (download
// and check, shader pipeline creation, weight upload), each submodel's first and warm call, and seconds per image.
//
//   node web/runner/run.mjs --site cache/site --out /tmp/run [--steps N] [--images 2] [--warm 5]
//       [--prompt ...] [--negative ...] [--guidance G] [--scheduler S] [--seed 0 | --latents noise.f32]
//       (steps, guidance and scheduler left out: the model's own, manifest.json "defaults", as on the page)
//       [--dawn-feature vulkan_enable_f16_on_nvidia] [--list-adapter] [--profile] [--serial-load]
//       [--cache-dir DIR] [--launch replay|plain] [--size WxH] [--variant auto|default|NAME]
//
// --size runs one of the site's sizes (manifest.json "sizes", built with model.sizes; default: its default size).
// --variant picks the compiled build (manifest.json "variants", web/src/variants.js): auto (the fastest this adapter
// runs), default, or a variant's name; it prints the pick and why, and result.json records them. A variant that
// needs an experimental feature (subgroup matrices) needs Dawn's toggle: --dawn-feature allow_unsafe_apis.
// --list-adapter with --site also lists the site's variants, one line each: "variant NAME: runs" or what it lacks.
//
// It loads the site through web/src/websd.js, the module the page's worker runs. --cache-dir keeps the weights in
// DIR (fs_cache.js: the page's weight cache on disk) and loads the site twice: the first load fetches what DIR
// lacks, the second is a returning visit; result.json has both (load, second_load) and where each file came from.
//
// The submodels load concurrently, as the page loads them (--serial-load: one after another, to compare); the
// load's phases are then busy times summed over submodels, which overlap, so they add up to more than the total.
// --launch picks the kernel launch path (web/src/launch.js): "replay" (the page's default: bind groups and scalars
// recorded once, one compute pass per call) or "plain" (tvmjs' own, a pass + bind group + write per dispatch).
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

import { PageError } from "../src/gpu.js";
import { launchSettings, LAUNCH_MODES } from "../src/launch.js";
import { loadManifest, SUBMODELS } from "../src/loader.js";
import { modelDefaults, StableDiffusion } from "../src/pipeline.js";
import { variantProblems, variantsOf } from "../src/variants.js";
import { loadSite } from "../src/websd.js";
import { FsWeightCache } from "./fs_cache.js";
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
  let launchPerCall = null; // what the replay launcher did in the last call (null on the plain path)
  return {
    calls,
    get first() { return first; },
    get perCall() { return perCall; },
    get launchPerCall() { return launchPerCall; },
    async call(inputs) {
      if (verbose) console.log(`  ${model.name}: call ${calls.length + 1}`);
      const before = counter.snapshot();
      const launchBefore = model.launcher?.report();
      const start = performance.now();
      const out = await model.call(inputs);
      calls.push(performance.now() - start);
      const after = counter.snapshot();
      perCall = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
      if (launchBefore) {
        const now = model.launcher.report();
        launchPerCall = Object.fromEntries(Object.entries(now).map(([k, v]) =>
          [k, typeof v === "number" && k in model.launcher.stats ? v - launchBefore[k] : v]));
      }
      if (!first) first = { inputs: inputs.map((x) => ({ ...x, data: x.data.slice() })), output: out };
      return out;
    },
  };
}

/** The runner's account of one load: total and busy time per phase, and where its files came from. */
function loadReport(model, concurrent) {
  const load = { total_ms: round(model.loadMs) };
  for (const phase of ["download", "pipelines", "upload"]) {
    load[`${phase}_ms`] = round(SUBMODELS.reduce((s, n) => s + model.models[n].loadTimes[phase], 0));
  }
  load.per_submodel_ms = Object.fromEntries(SUBMODELS.map((n) => [n, Object.fromEntries(
    Object.entries(model.models[n].loadTimes).map(([k, v]) => [k, round(v)]))]));
  load.concurrent = concurrent;
  const st = model.loadStats;
  load.files = { cached_files: st.cachedFiles, cached_bytes: st.cachedBytes, fetched_files: st.fetchedFiles,
    fetched_bytes: st.fetchedBytes, stored_files: st.storedFiles, dropped: st.dropped,
    store_wait_after_load_ms: round(model.storeWaitMs ?? 0) };
  return load;
}

function options() {
  const { values } = parseArgs({
    options: {
      site: { type: "string" }, out: { type: "string" },
      prompt: { type: "string", default: "a photo of an astronaut riding a horse" },
      negative: { type: "string", default: "" },
      steps: { type: "string" }, guidance: { type: "string" },
      scheduler: { type: "string" }, seed: { type: "string", default: "0" },
      latents: { type: "string" }, images: { type: "string", default: "2" }, warm: { type: "string", default: "5" },
      "dawn-feature": { type: "string", multiple: true, default: [] },
      "list-adapter": { type: "boolean", default: false },
      verbose: { type: "boolean", default: false },
      profile: { type: "boolean", default: false },
      "serial-load": { type: "boolean", default: false },
      "cache-dir": { type: "string" }, size: { type: "string" },
      launch: { type: "string", default: "replay" }, variant: { type: "string", default: "auto" },
    },
  });
  if (!values.site && !values["list-adapter"]) throw new PageError("--site <directory doit built> is required");
  if (!LAUNCH_MODES.includes(values.launch)) {
    throw new PageError(`--launch ${values.launch}: use one of ${LAUNCH_MODES.join(", ")}`);
  }
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
    report: {
      vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
      features: [...adapter.features].sort(),
      limits: Object.fromEntries(LIMITS.map((n) => [n, adapter.limits[n]])),
      subgroup_matrix_configs: [...(info.subgroupMatrixConfigs ?? [])].map((c) => ({ componentType: c.componentType,
        resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K })),
    },
    adapter,
  };
}

async function main() {
  const o = options();
  Object.assign(globalThis, globals); // GPUBufferUsage, GPUShaderStage, ... as in a browser
  const dawnFlags = o["dawn-feature"].length ? [`enable-dawn-features=${o["dawn-feature"].join(",")}`] : [];
  const gpu = create(dawnFlags);
  const { report: adapter, adapter: gpuAdapter } = await adapterReport(gpu);
  console.log(`adapter: ${adapter.vendor} ${adapter.architecture} ${adapter.description || adapter.device}`);
  console.log(`  limits: ${LIMITS.map((n) => `${n}=${adapter.limits[n]}`).join(" ")}`);
  console.log(`  shader-f16: ${adapter.features.includes("shader-f16")}; dawn features: ${o["dawn-feature"]}`);
  if (o["list-adapter"] && !o.site) return;

  launchSettings.mode = o.launch;
  const site = path.resolve(o.site);
  // a site that is not there is named by its manifest, before the runtime bundle beside it is looked for
  const siteManifest = await loadManifest(pathToFileURL(path.join(site, "model", "manifest.json")).href, fileFetch);
  if (o["list-adapter"]) {  // which of the site's builds this adapter runs (benchmarks/bench_webgpu.py --variants all)
    for (const v of variantsOf(siteManifest)) {
      const problems = variantProblems(gpuAdapter, v.requires);
      console.log(`variant ${v.name}: ${problems.length ? `lacks ${problems.join("; ")}` : "runs"}`);
    }
    console.log("variant default: runs");
    return;
  }
  let tvmjs;
  try {
    tvmjs = createRequire(import.meta.url)(path.join(site, "tvmjs.bundle.js"));
  } catch (err) {
    throw new PageError(`${site}/tvmjs.bundle.js does not load (${err.code ?? err.message}): rebuild the site ` +
      "with `doit site`");
  }
  let profiler = null;
  let lastStage = "";
  const cache = o["cache-dir"] ? new FsWeightCache(path.resolve(o["cache-dir"])) : null;
  const loadOnce = () => loadSite(pathToFileURL(`${site}/`), {
    tvmjs, gpu, fetch: fileFetch, cache, serialLoad: o["serial-load"], size: o.size, variant: o.variant,
    optionalFeatures: o.profile ? ["timestamp-query"] : [],
    onProgress: (p) => {
      if (o.verbose && p.stage !== lastStage) console.log(`  ${(lastStage = p.stage)}`);
    },
    onNotice: (text) => console.log(`notice: ${text}`),
    onDevice: (device) => {
      if (!o.profile) return;
      if (profiler) profiler.useDevice(device); // the second load's device runs the profiled image
      else if (device.features.has("timestamp-query")) profiler = installKernelProfiler(device, globals);
      else console.log("profile: this adapter has no timestamp-query feature; no per-kernel times");
    },
  });
  let model = await loadOnce();
  console.log(`variant: ${model.variant.name} (${model.variant.reason})`);
  for (const n of SUBMODELS) {
    const k = model.models[n].kernelOverrides;
    if (k) console.log(`${n}: ${k.applied} of ${k.kernels} kernels from the variant's WGSL at load${k.unused.length ?
      ` (${k.unused.length} not created yet)` : ""}`);
  }
  let secondLoad = null;
  if (cache) {  // the first load filled the cache (what it lacked); the second is a returning visit
    const start = performance.now();
    await model.files.flush();  // the load did not wait for its files to be stored
    model.storeWaitMs = performance.now() - start;
  }
  const load = loadReport(model, !o["serial-load"]);
  if (cache) {
    model.dispose();
    model = await loadOnce();
    secondLoad = loadReport(model, !o["serial-load"]);
  }
  for (const [label, l] of [["load", load], ["second load", secondLoad]].filter(([, l]) => l)) {
    console.log(`${label}: ${(l.total_ms / 1000).toFixed(2)} s, ${l.concurrent ? "submodels concurrently" :
      "one by one"} (busy: download+check ${(l.download_ms / 1000).toFixed(2)} s, shader pipelines ` +
      `${(l.pipelines_ms / 1000).toFixed(2)} s, weight upload ${(l.upload_ms / 1000).toFixed(2)} s); files: ` +
      `${l.files.cached_files} from the cache, ${l.files.fetched_files} from the site ` +
      `(${(l.files.fetched_bytes / 1e6).toFixed(1)} MB)${l.files.dropped.length ? `, ${l.files.dropped.length} ` +
      "bad cache entries dropped" : ""}`);
  }
  const { sized: manifest, tokenizer } = model;  // the manifest at the size loaded (--size)
  const loaded = model.models;

  const counter = installCallCounter(globals);
  const models = Object.fromEntries(SUBMODELS.map((n) => [n, timedModel(loaded[n], counter, o.verbose)]));
  model.pipeline.models = models;  // the module's own generate(), with every submodel call timed
  let latents;
  if (o.latents) {
    const raw = await readFile(o.latents);
    latents = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  }
  const own = modelDefaults(manifest);
  const settings = { prompt: o.prompt, negativePrompt: o.negative, steps: Number(o.steps ?? own.steps),
    guidance: Number(o.guidance ?? own.guidance), scheduler: o.scheduler ?? own.scheduler, seed: Number(o.seed),
    latents };
  const imageSeconds = [];
  let image;
  for (let i = 0; i < Number(o.images); i++) {
    const start = performance.now();
    image = await model.generate(settings);
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
      webgpu_ops_per_call: models[n].perCall, launch_per_call: models[n].launchPerCall }];
  }));
  for (const [n, c] of Object.entries(calls)) {
    const ops = Object.entries(c.webgpu_ops_per_call ?? {}).map(([k, v]) => `${v} ${k}`).join(", ");
    console.log(`${n}: first call ${c.first_ms} ms, warm median ${c.warm_median_ms} ms (${c.warm_calls} calls); ` +
      `per call: ${ops}`);
    if (c.launch_per_call?.fallback) console.log(`${n}: launch fell back to tvmjs': ${c.launch_per_call.fallback}`);
  }

  const result = {
    adapter, dawn_features: o["dawn-feature"], node: process.version, launch: o.launch,
    variant: model.variant.name, variant_reason: model.variant.reason,
    kernel_overrides: Object.fromEntries(SUBMODELS.filter((n) => model.models[n].kernelOverrides)
      .map((n) => [n, model.models[n].kernelOverrides])),
    site: { model: manifest.model, dtype: manifest.dtype, size: model.size, width: manifest.width,
      height: manifest.height,
      required_limits: manifest.required_limits ?? null, limits_profile: manifest.limits_profile ?? null },
    settings: { ...settings, latents: o.latents ? path.basename(o.latents) : null },
    load, second_load: secondLoad, calls, image_seconds: imageSeconds.map((s) => round(s, 4)),
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
    for (const n of SUBMODELS) if (loaded[n].launcher) loaded[n].launcher.passPerDispatch = true; // one pass a kernel
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
