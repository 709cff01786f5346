// The embeddable module: load a site, generate images, cancel, dispose. The page runs it in its worker
// (worker.js) and the headless runner (web/runner/run.mjs) in Node, so both go through this one code path.
// API and an example: web/README.md.

import { requestDevice, withGpuErrorCheck } from "./gpu.js";
import { filesToFetch, loadManifest, loadSubmodels, loadTokenizer, Progress } from "./loader.js";
import { StableDiffusion } from "./pipeline.js";
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
 * @returns {Promise<WebsdModel>}
 */
export async function loadSite(siteUrl, options) {
  const { tvmjs, gpu = globalThis.navigator?.gpu, fetch = globalThis.fetch, cache = null,
    onProgress = () => {}, onNotice = () => {}, optionalFeatures = [], serialLoad = false, onDevice = () => {},
  } = options;
  const start = performance.now();
  const manifestUrl = new URL("model/manifest.json", siteUrl);
  const manifest = await loadManifest(manifestUrl.href, fetch);
  const { adapter, device } = await requestDevice(manifest, gpu, optionalFeatures);
  onDevice(device);
  const storage = await checkStorage(cache, manifest);
  if (storage.notice) onNotice(storage.notice);
  const files = new ModelFiles(manifestUrl, manifest.files, { fetch, cache, store: storage.fits, onNotice });
  const total = filesToFetch(manifest).reduce((sum, p) => sum + (manifest.files[p]?.bytes ?? 0), 0);
  const progress = new Progress(total, (p) => onProgress({ stage: p.stage, doneBytes: p.doneBytes,
    totalBytes: p.totalBytes }));
  const tokenizer = await loadTokenizer(manifest, files, progress);
  // one error scope for the concurrent loads: WebGPU's error scopes are a stack, not per task
  const models = await withGpuErrorCheck(device, "loading the model",
    () => loadSubmodels(tvmjs, device, manifest, files, progress, { serial: serialLoad }));
  return new WebsdModel({ manifest, adapter, device, tokenizer, models, files, storage,
    loadMs: performance.now() - start });
}

export class WebsdModel {
  constructor(parts) {
    Object.assign(this, parts);  // manifest, adapter, device, tokenizer, models, files, storage, loadMs
    this.pipeline = new StableDiffusion(this.manifest, this.tokenizer, this.models);
    this.running = null;  // the AbortController of the generation under way
  }

  /** Where the load's files came from: {cachedFiles, cachedBytes, fetchedFiles, fetchedBytes, dropped, ...}. */
  get loadStats() {
    return this.files.stats;
  }

  /**
   * Generate one image; one at a time.
   * @param {object} opts prompt, negativePrompt, seed, steps, guidance, scheduler ("dpm++2m" | "euler"),
   *   latents (Float32Array, replaces the seeded noise), previewEvery
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
    for (const m of Object.values(this.models)) {
      for (const obj of [m.params, m.fn, m.vm, m.tvm]) obj?.dispose?.();
    }
    this.device.destroy();
  }
}
