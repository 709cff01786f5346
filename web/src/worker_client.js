// The main thread's side of worker.js: the same operations as websd.js, as promises, with the model in a worker.
//
//   const sd = new WorkerModel();                      // starts worker.js (a module worker)
//   const info = await sd.load(siteUrl, {onProgress, onNotice, onCacheStored, size, variant});
//   const image = await sd.generate({prompt, seed, steps, size}, {onStep});   // rejects with err.cancelled after cancel()
//   sd.cancel(); await sd.cacheStatus(); await sd.deleteCache(); sd.dispose();

import { PageError } from "./gpu.js";

export class WorkerModel {
  constructor(workerUrl = new URL("./worker.js", import.meta.url)) {
    this.worker = new Worker(workerUrl, { type: "module" });
    this.pending = new Map();
    this.nextId = 1;
    this.handlers = {};  // event name -> callback of the operation under way (progress, notice, step, deviceLost)
    // A message posted while the worker's modules still evaluate (tokenizer.js awaits its import) could reach it
    // before its onmessage is set, and be lost: calls wait for the worker's "started".
    this.started = new Promise((resolve) => { this.handlers.started = resolve; });
    this.worker.onmessage = ({ data }) => this.receive(data);
    this.worker.onerror = (e) => this.failAll(new PageError("The model's worker failed: " +
      `${e.message ?? "a module of the page did not load"}.`));
  }

  receive({ id, ok, value, error, event, data }) {
    if (event) {
      this.handlers[event]?.(data);
      return;
    }
    const call = this.pending.get(id);
    this.pending.delete(id);
    if (ok) {
      call.resolve(value);
      return;
    }
    const err = error.userFacing ? new PageError(error.message) : new Error(error.message);
    err.cancelled = error.cancelled;
    call.reject(err);
  }

  failAll(err) {
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
  }

  async call(op, args) {
    await this.started;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args });
    });
  }

  /**
   * Load the site (at `size`, one of manifest.sizes[].name; default: the site's default size; `variant`: websd.js
   * loadSite's, default "auto"); resolves to {manifest, size, variant: {name, reason}, loadMs, loadStats, persisted,
   * cache}. onCacheStored(cache status) is called when the files the
   * load fetched are all stored (after the load resolves).
   */
  load(siteUrl, { onProgress, onNotice, onDeviceLost, onCacheStored, size, variant } = {}) {
    Object.assign(this.handlers, { progress: onProgress, notice: onNotice, deviceLost: onDeviceLost,
      cacheStored: onCacheStored });
    return this.call("load", { siteUrl: String(siteUrl), size, variant });
  }

  generate(opts, { onStep } = {}) {
    this.handlers.step = onStep;
    return this.call("generate", opts);
  }

  /** Stop the generation under way within one step: its promise rejects with an error whose `cancelled` is true. */
  cancel() {
    return this.call("cancel");
  }

  cacheStatus() {
    return this.call("cacheStatus");
  }

  deleteCache() {
    return this.call("deleteCache");
  }

  dispose() {
    this.worker.terminate();
    this.failAll(new Error("the model was disposed"));
  }
}
