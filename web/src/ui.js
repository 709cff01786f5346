// The page: the model runs in a worker (worker.js via worker_client.js), so loading and generating never block
// this thread; this module shows progress, wires the controls and the weight cache, and exposes `window.websd`.
//
// document.body.dataset.state: "loading" -> "ready" -> "running" -> "done" (-> "running" ...), or "error" with the
// message in #error. Cancel returns to "ready". A message that stops nothing (storage too small) is in #notice.
//
// URL parameters: prompt, negative, steps, guidance, seed, scheduler, preview (k), size (WxH), autorun=1,
// variant=auto|default|NAME (which compiled build: variants.js; #variant says which runs and why), and
// latents=<url of raw little-endian float32 initial noise, 1 x C x h x w> which replaces the seeded noise.
//
// window.websd = {
//   ready: Promise (resolves when the model is loaded, rejects on a load error),
//   manifest, schedulers: [names], sizes: [names, the default first], loadStats (files from the cache / the network),
//   variant: {name, reason} (the compiled build that runs: "default" or one of manifest.variants),
//   generate({prompt, negativePrompt, seed, steps, guidance, scheduler, latents: Float32Array, previewEvery,
//             size: one of sizes (its modules load, its weights come from the weight cache)})
//     -> Promise<{width, height, pixels: Float32Array (H*W*3, 0..255), rgba: Uint8ClampedArray}>  (also drawn),
//   cancel(), cacheStatus() -> {files, bytes, cachedFiles, cachedBytes}, deleteCache()
// }

import { PageError } from "./gpu.js";
import { modelDefaults } from "./pipeline.js";
import { DEFAULT_SCHEDULER, SCHEDULERS } from "./schedulers/index.js";
import { sizeNames } from "./sizes.js";
import { WorkerModel } from "./worker_client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MANIFEST_URL = new URL("model/manifest.json", location.href);

function setState(state) {
  document.body.dataset.state = state;
}

function showError(err) {
  console.error(err);
  const text = err instanceof PageError ? err.message : `Error: ${err?.message ?? err}`;
  $("error").textContent = text;
  $("error").hidden = false;
  $("status-text").textContent = "Stopped.";
  setState("error");
}

function showProgress(fraction, text) {
  $("progress").value = Number.isFinite(fraction) ? fraction : 0;
  $("status-text").textContent = text;
}

const mb = (n) => (n / 1e6).toFixed(1);

async function loadLatentsFromUrl(url, expected) {
  const res = await fetch(url);
  if (!res.ok) throw new PageError(`latents=${url} answered HTTP ${res.status}`);
  const buf = await res.arrayBuffer();
  if (buf.byteLength !== expected * 4) {
    throw new PageError(`latents=${url} has ${buf.byteLength} bytes; the model needs ${expected} float32 values ` +
      `(${expected * 4} bytes)`);
  }
  return new Float32Array(buf);
}

// the cache status once this load's files are stored: newer than the one the load returns, which the worker may
// compute before the store is done and post after it (then the load's must not overwrite it)
let storedCache = null;

async function load(sd) {
  showProgress(0, "Loading manifest…");
  const info = await sd.load(new URL(".", location.href), {
    onProgress: (p) => showProgress(p.doneBytes / p.totalBytes,
      `${p.stage} — ${mb(p.doneBytes)} / ${mb(p.totalBytes)} MB`),
    onNotice: showNotice,
    onDeviceLost: (text) => showError(new PageError(text)),
    size: params.get("size") ?? undefined,  // loaded first, so a ?size= page loads only that size's modules
    variant: params.get("variant") ?? undefined,  // ?variant=NAME|default forces a build (variants.js)
    onCacheStored: (status) => {
      storedCache = status;
      showCache(status, window.websd.loadStats);
      document.body.dataset.cacheStored = "1";  // for tests: what this load fetched is stored (or refused)
    },
  });
  const m = info.manifest;
  const count = m.latent_channels * m.latent_height * m.latent_width;
  const latentsUrl = params.get("latents");
  const fixedLatents = latentsUrl ? await loadLatentsFromUrl(latentsUrl, count) : null;
  return { ...info, fixedLatents };
}

/** Which compiled build runs and why (variants.js): shown where the site has more than its default build. */
function showVariant(manifest, variant) {
  window.websd.variant = variant;
  $("variant").hidden = !manifest.variants?.length;
  $("variant").textContent = `Kernels: ${variant.name}${variant.reason ? ` (${variant.reason})` : ""}`;
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = false;
}

function showCache(status, loadStats) {
  $("delete-cache").disabled = !status?.cachedFiles;
  if (!status) {
    $("cache-text").textContent = "Weight cache: not available here (it needs https or localhost).";
    return;
  }
  const from = loadStats ? ` This load: ${loadStats.cachedFiles} files from the cache, ${loadStats.fetchedFiles} ` +
    `downloaded${loadStats.dropped.length ? `, ${loadStats.dropped.length} bad cached files fetched again` : ""}.` : "";
  $("cache-text").textContent = `Cached in this browser: ${status.cachedFiles} of ${status.files} files ` +
    `(${mb(status.cachedBytes)} of ${mb(status.bytes)} MB).${from}`;
}

function draw(image) {
  const canvas = $("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.style.width = `${Math.max(image.width, 256)}px`;
  canvas.getContext("2d").putImageData(new ImageData(image.rgba, image.width, image.height), 0, 0);
}

function readControls() {
  return {
    prompt: $("prompt").value,
    negativePrompt: $("negative-prompt").value,
    steps: parseInt($("steps").value, 10),
    guidance: parseFloat($("guidance").value),
    seed: parseInt($("seed").value, 10),
    scheduler: $("scheduler").value,
    previewEvery: parseInt($("preview-every").value, 10) || 0,
    size: $("size").value || undefined,
  };
}

function applyUrlParams() {
  const map = { prompt: "prompt", negative: "negative-prompt", steps: "steps", guidance: "guidance", seed: "seed",
    scheduler: "scheduler", preview: "preview-every" };  // size: set once the manifest lists the sizes
  for (const [key, id] of Object.entries(map)) {
    if (params.has(key)) $(id).value = params.get(key);
  }
}

/** The model's own steps, guidance and scheduler into the controls the URL did not set; a model without
 * classifier-free guidance (SD-Turbo) has no use for the guidance and negative prompt controls. */
function applyModelDefaults(manifest) {
  const own = modelDefaults(manifest);
  for (const [key, id] of [["steps", "steps"], ["guidance", "guidance"], ["scheduler", "scheduler"]]) {
    if (!params.has(key)) $(id).value = String(own[key]);
  }
  const sizes = sizeNames(manifest);  // the size control: one option per size the site was built with
  const select = $("size");
  for (const name of sizes) select.add(new Option(name.replace("x", " × "), name));
  select.value = sizes.includes(params.get("size")) ? params.get("size") : sizes[0];
  $("size-label").hidden = sizes.length < 2;
  if (manifest.classifier_free === false) {
    for (const id of ["guidance", "negative-prompt"]) {
      $(id).disabled = true;
      $(id).title = "this model runs without classifier-free guidance";
    }
  }
}

function setup() {
  const select = $("scheduler");
  for (const [name, { label }] of Object.entries(SCHEDULERS)) select.add(new Option(label, name));
  select.value = DEFAULT_SCHEDULER;
  applyUrlParams();
  $("random-seed").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  });
  window.addEventListener("unhandledrejection", (e) => showError(e.reason));

  const sd = new WorkerModel();
  let loaded = null;
  let busy = false;
  let lastSeed = 0;

  async function generate(opts) {
    if (!loaded) throw new Error("the model is not loaded yet (await window.websd.ready)");
    if (busy) throw new Error("a generation is already running");
    busy = true;
    $("generate").disabled = true;
    $("cancel").disabled = false;
    $("error").hidden = true;
    setState("running");
    const o = { ...modelDefaults(loaded.manifest), latents: loaded.fixedLatents ?? undefined, ...opts };
    if (o.size) $("size").value = o.size;  // the control shows the size generated
    const started = performance.now();
    let lastStep = 0;
    try {
      const image = await sd.generate(o, {
        onStep: ({ step, steps, preview }) => {
          lastStep = step;
          showProgress(step / steps, `Denoising: step ${step} / ${steps}`);
          if (preview) draw(preview);
        },
      });
      draw(image);
      if (image.variant) showVariant(loaded.manifest, image.variant);  // a size switch may change it
      lastSeed = o.seed;
      $("download").disabled = false;
      showProgress(1, `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
      setState("done");
      return image;
    } catch (err) {
      if (err.cancelled) {
        showProgress(0, `Cancelled after step ${lastStep} / ${o.steps}.`);
        setState("ready");
      } else {
        showError(err);
      }
      throw err;
    } finally {
      busy = false;
      $("generate").disabled = false;
      $("cancel").disabled = true;
    }
  }

  $("controls").addEventListener("submit", (e) => {
    e.preventDefault();
    generate(readControls()).catch(() => {}); // already shown
  });
  $("cancel").addEventListener("click", () => sd.cancel());
  $("delete-cache").addEventListener("click", async () => {
    $("delete-cache").disabled = true;
    showCache(await sd.deleteCache());
  });
  $("download").addEventListener("click", () => {
    $("canvas").toBlob((blob) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `websd-seed${lastSeed}.png`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }, "image/png");
  });

  const ready = load(sd).then((l) => {
    loaded = l;
    applyModelDefaults(l.manifest);
    Object.assign(window.websd, { manifest: l.manifest, loadStats: l.loadStats, sizes: sizeNames(l.manifest) });
    showVariant(l.manifest, l.variant);
    showCache(storedCache ?? l.cache, l.loadStats);
    if (l.fixedLatents) {
      $("latents-note").textContent = "Initial noise comes from the latents URL (the seed is ignored).";
      $("latents-note").hidden = false;
    }
    $("generate").disabled = false;
    showProgress(1, `Ready (${(l.loadMs / 1000).toFixed(1)} s).`);
    setState("ready");
    if (params.get("autorun") === "1") generate(readControls()).catch(() => {});
  });
  ready.catch(showError);

  window.websd = { ready, generate, cancel: () => sd.cancel(), cacheStatus: () => sd.cacheStatus(),
    deleteCache: () => sd.deleteCache(), manifest: null, loadStats: null, sizes: [], variant: null,
    schedulers: Object.keys(SCHEDULERS) };
}

setup();
