// The page's model, off the main thread: a module worker that runs websd.js (load, generate, cancel) and the
// weight cache, so loading and the denoising loop never block the page. worker_client.js is the other end.
//
// Messages in: {id, op: "load" | "generate" | "cancel" | "cacheStatus" | "deleteCache", args}; each gets one
// reply {id, ok: true, value} or {id, ok: false, error: {message, userFacing, cancelled}}. Events out (no id):
// {event: "started" | "progress" | "notice" | "step" | "deviceLost" | "cacheStored", data}.

import { PageError } from "./gpu.js";
import { Cancelled } from "./pipeline.js";
import { BrowserWeightCache, cacheStatus, deleteCachedModel } from "./weight_cache.js";
import { loadSite } from "./websd.js";

const cache = await BrowserWeightCache.create();
let model = null;

const emit = (event, data, transfer = []) => self.postMessage({ event, data }, transfer);

/** TVM's web runtime: a UMD script, which sets globalThis.tvmjs when imported as a module. */
async function importTvmjs() {
  try {
    await import(new URL("../tvmjs.bundle.js", import.meta.url).href);
  } catch (err) {
    throw new PageError(`tvmjs.bundle.js did not load (${err.message ?? err}): the site is incomplete (rebuild ` +
      "it with `doit site`).");
  }
  return globalThis.tvmjs;
}

const ops = {
  async load({ siteUrl, size, variant }) {
    model = await loadSite(siteUrl, {
      tvmjs: await importTvmjs(), cache, size, variant,
      onProgress: (p) => emit("progress", p),
      onNotice: (text) => emit("notice", text),
    });
    model.device.lost.then((info) => {
      if (info.reason !== "destroyed") emit("deviceLost", `The GPU device was lost: ${info.message}`);
    });
    // the files the load fetched are still being stored: the page hears when that is done
    model.files.flush().then(async () => emit("cacheStored", cache && await cacheStatus(cache, model.sized)));
    return { manifest: model.manifest, size: model.size, variant: model.variant, loadMs: model.loadMs,
      loadStats: model.loadStats, persisted: model.storage.persisted,
      cache: cache && await cacheStatus(cache, model.sized) };
  },

  async generate(opts) {  // opts.size: another of the site's sizes (websd.js setSize: weights from the cache)
    const image = await model.generate(opts, {
      onStep: ({ step, steps, timestep, preview }) => emit("step", { step, steps, timestep, preview }),
    });
    return { ...image, variant: model.variant };  // a size switch may change it (variants are built at one size)
  },

  cancel() {
    model?.cancel();
  },

  async cacheStatus() {
    return cache && model ? cacheStatus(cache, model.sized) : null;
  },

  async deleteCache() {
    if (cache && model) await deleteCachedModel(cache, model.manifest);
    return this.cacheStatus();
  },
};

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    const value = await ops[op](args);
    const transfer = value?.pixels ? [value.pixels.buffer, value.rgba.buffer] : [];
    self.postMessage({ id, ok: true, value }, transfer);
  } catch (err) {
    self.postMessage({ id, ok: false, error: { message: err?.message ?? String(err),
      userFacing: err instanceof PageError, cancelled: err instanceof Cancelled } });
  }
};
emit("started");  // worker_client.js waits for this before its first message
