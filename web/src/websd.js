// The embeddable module: load a site, generate images, cancel, dispose. The page runs it in its worker
// (worker.js) and the headless runner (web/runner/run.mjs) in Node, so both go through this one code path.
// API and an example: web/README.md.

import { requestAdapter, requestDevice, withGpuErrorCheck } from "./gpu.js";
import { filesToFetch, loadManifest, loadSubmodels, loadTokenizer, Progress, submodelFiles } from "./loader.js";
import { manifestAtSize, submodelsToSwitch } from "./sizes.js";
import { StableDiffusion } from "./pipeline.js";
import { DEFAULT_VARIANT, manifestWithVariant, pickVariant } from "./variants.js";
import { checkStorage, ModelFiles } from "./weight_cache.js";

/**
 * Load the site at `siteUrl` (the directory with index.html and model/): manifest, GPU device, tokenizer and the
 * three submodels, their files from `cache` where it holds them.
 * @param {string|URL} siteUrl
 * @param {object} options
 * @param {object} options.tvmjs TVM's web runtime (the global of tvmjs.bundle.js)
 * @param {GPU} [options.gpu] navigator.gpu, or Dawn's in Node
 * @param {Function} [options.fetch] fetch(url) -> Response (file: URLs in Node)
 * @param {object|null} [options.cache] a weight cache (weight_cache.js); null: always download
 * @param {(p: {stage: string, doneBytes: number, totalBytes: number}) => void} [options.onProgress]
 * @param {(text: string) => void} [options.onNotice] a message for the user that does not stop the load
 *   (storage too small or full)
 * @param {string[]} [options.optionalFeatures] GPU features requested where present (e.g. "timestamp-query")
 * @param {boolean} [options.serialLoad] load the submodels one after another (to measure the overlap)
 * @param {(device: GPUDevice) => void} [options.onDevice] called with the device before anything is loaded
 * @param {string} [options.size] which of the site's sizes (manifest.sizes[].name, "<width>x<height>") to load;
 *   default: the manifest's default_size. generate({size}) switches later.
 * @param {string} [options.variant] which compiled build (manifest.variants, variants.js): "auto" (default: the
 *   fastest this GPU adapter runs), "default", or a variant's name (a PageError where the adapter cannot run it)
 * @returns {Promise<WebsdModel>}
 */
export async function loadSite(siteUrl, options) {
  const { tvmjs, gpu = globalThis.navigator?.gpu, fetch = globalThis.fetch, cache = null,
    onProgress = () => {}, onNotice = () => {}, optionalFeatures = [], serialLoad = false, onDevice = () => {},
    size = null, variant = "auto",
  } = options;
  const start = performance.now();
  const manifestUrl = new URL("model/manifest.json", siteUrl);
  const manifest = await loadManifest(manifestUrl.href, fetch);
  const sized = manifestAtSize(manifest, size);  // an unknown size stops here, before the device or a download
  const adapter = await requestAdapter(gpu);
  // the variant is picked from the adapter: the device must be asked for its features
  const picked = pickVariant(sized, adapter, variant);
  const { device } = await requestDevice(manifest, gpu, optionalFeatures, { adapter, features: picked.features });
  onDevice(device);
  const storage = await checkStorage(cache, picked.manifest);
  if (storage.notice) onNotice(storage.notice);
  const files = new ModelFiles(manifestUrl, manifest.files, { fetch, cache, store: storage.fits, onNotice });
  const progress = newProgress(manifest, filesToFetch(picked.manifest), onProgress);
  const tokenizer = await loadTokenizer(manifest, files, progress);
  // one error scope for the concurrent loads: WebGPU's error scopes are a stack, not per task
  const models = await withGpuErrorCheck(device, "loading the model",
    () => loadSubmodels(tvmjs, device, picked.manifest, files, progress, { serial: serialLoad }));
  return new WebsdModel({ manifest, sized: picked.manifest, picked: { name: picked.name, reason: picked.reason },
    adapter, device, tokenizer, models, files, storage, tvmjs, onProgress,
    loadMs: performance.now() - start });
}

function newProgress(manifest, paths, onProgress) {
  const total = paths.reduce((sum, p) => sum + (manifest.files[p]?.bytes ?? 0), 0);
  return new Progress(total, (p) => onProgress({ stage: p.stage, doneBytes: p.doneBytes, totalBytes: p.totalBytes }));
}

function disposeSubmodel(m) {
  for (const obj of [m.params, m.fn, m.vm, m.tvm]) obj?.dispose?.();
}

/** Free a submodel the page no longer runs (a size switch) while the device stays: its weights and VM, not its
 * Instance, whose dispose() destroys the shared GPUDevice (tvmjs' WebGPUContext.dispose). */
function retireSubmodel(m) {
  for (const obj of [m.params, m.fn, m.vm]) obj?.dispose?.();
  // tvmjs >= 0.22 names it tensorCacheClear, v0.21 ndarrayCacheClear: the cache holds the uploaded weights
  (m.tvm?.tensorCacheClear ?? m.tvm?.ndarrayCacheClear)?.call(m.tvm);
  if (m.tvm) m.tvm.deviceLostIsError = false;  // the device's end (dispose) is not this instance's error
}

export class WebsdModel {
  constructor(parts) {
    // manifest (the site's), sized (the manifest at the loaded size and variant: manifestAtSize, manifestWithVariant),
    // picked ({name, reason}: the variant chosen at load), adapter, device, tokenizer, models, files, storage, tvmjs,
    // onProgress, loadMs
    Object.assign(this, parts);
    this.pipeline = new StableDiffusion(this.sized, this.tokenizer, this.models);
    this.running = null;  // the AbortController of the generation under way
  }

  /** The loaded size's name ("<width>x<height>"). */
  get size() {
    return this.sized.size ?? `${this.sized.width}x${this.sized.height}`;
  }

  /**
   * The compiled build that runs, {name, reason}: "default" or one of manifest.variants (picked at load, variants.js
   * pickVariant); at a size other than the site's default the default build runs, and the reason says so.
   */
  get variant() {
    const picked = this.picked ?? { name: DEFAULT_VARIANT, reason: "" };
    if (picked.name === DEFAULT_VARIANT || this.sized.variant === picked.name) return picked;
    return { name: DEFAULT_VARIANT, reason: `${picked.name} is built for the site's default size only, not ${this.size}` };
  }

  /**
   * Switch to another of the site's sizes: load that size's .wasm of each submodel that differs (unet, vae) and
   * free the old ones. The weights are the same files: they come from the weight cache (`files`), so a page that
   * has stored them downloads none again. Called by generate({size}).
   * @param {string} name manifest.sizes[].name
   */
  async setSize(name) {
    // the variant picked at load runs at the default size (its device has the features); other sizes: default
    const to = manifestWithVariant(manifestAtSize(this.manifest, name), this.picked?.name);
    const names = submodelsToSwitch(this.sized, to);
    if (names.length) {
      const progress = newProgress(this.manifest, names.flatMap((n) => submodelFiles(to, n)), this.onProgress);
      const loaded = await withGpuErrorCheck(this.device, `loading size ${name}`,
        () => loadSubmodels(this.tvmjs, this.device, to, this.files, progress, { names }));
      for (const n of names) retireSubmodel(this.models[n]);
      Object.assign(this.models, loaded);
    }
    this.sized = to;
    this.pipeline = new StableDiffusion(to, this.tokenizer, this.models);
  }

  /** Where the load's files came from: {cachedFiles, cachedBytes, fetchedFiles, fetchedBytes, dropped, ...}. */
  get loadStats() {
    return this.files.stats;
  }

  /**
   * Generate one image; one at a time.
   * @param {object} opts prompt, negativePrompt, seed, steps, guidance, scheduler ("dpm++2m" | "euler"),
   *   latents (Float32Array, replaces the seeded noise), previewEvery, size (one of manifest.sizes[].name: switches
   *   to it first, see setSize; default: the size loaded last)
   * @param {{onStep?: Function, signal?: AbortSignal}} [hooks] onStep({step, steps, timestep, preview?})
   * @returns {Promise<{width, height, pixels: Float32Array, rgba: Uint8ClampedArray}>} rejects with
   *   pipeline.js Cancelled after cancel()
   */
  async generate(opts, { onStep = () => {}, signal } = {}) {
    if (this.running) throw new Error("a generation is already running");
    const controller = new AbortController();
    signal?.addEventListener("abort", () => controller.abort(), { once: true });
    this.running = controller;
    try {
      if (opts.size && opts.size !== this.size) await this.setSize(opts.size);
      return await withGpuErrorCheck(this.device, "generating",
        () => this.pipeline.generate(opts, onStep, controller.signal));
    } finally {
      this.running = null;
    }
  }

  /** Stop the generation under way within one step (its promise rejects with Cancelled). */
  cancel() {
    this.running?.abort();
  }

  /** Free the GPU memory and the TVM instances; the object is unusable afterwards. */
  dispose() {
    this.cancel();
    Object.values(this.models).forEach(disposeSubmodel);
    this.device.destroy();
  }
}
