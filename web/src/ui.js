// The page: loads everything with a progress bar, wires the controls, and exposes `window.websd` for tests.
//
// document.body.dataset.state: "loading" -> "ready" -> "running" -> "done" (-> "running" ...), or "error" with the
// message in #error.
//
// URL parameters: prompt, negative, steps, guidance, seed, scheduler, preview (k), autorun=1, and
// latents=<url of raw little-endian float32 initial noise, 1 x C x h x w> which replaces the seeded noise.
//
// window.websd = {
//   ready: Promise (resolves when the model is loaded, rejects on a load error),
//   manifest, schedulers: [names],
//   generate({prompt, negativePrompt, seed, steps, guidance, scheduler, latents: Float32Array, previewEvery})
//     -> Promise<{width, height, pixels: Float32Array (H*W*3, 0..255), rgba: Uint8ClampedArray}>  (also drawn)
// }

import { PageError, requestDevice, withGpuErrorCheck } from "./gpu.js";
import { filesToFetch, loadManifest, loadSubmodels, loadTokenizer, Progress } from "./loader.js";
import { DEFAULTS, StableDiffusion } from "./pipeline.js";
import { DEFAULT_SCHEDULER, SCHEDULERS } from "./schedulers/index.js";

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

async function load() {
  if (typeof globalThis.tvmjs === "undefined") {
    throw new PageError("tvmjs.bundle.js did not load: the site is incomplete (rebuild it with `doit site`).");
  }
  showProgress(0, "Loading manifest…");
  const manifest = await loadManifest(MANIFEST_URL.href);
  const { device } = await requestDevice(manifest);
  device.lost.then((info) => {
    if (info.reason !== "destroyed") showError(new PageError(`The GPU device was lost: ${info.message}`));
  });

  const total = filesToFetch(manifest).reduce((sum, p) => sum + (manifest.files[p]?.bytes ?? 0), 0);
  const progress = new Progress(total, (p) => {
    showProgress(p.doneBytes / p.totalBytes, `${p.stage} — ${mb(p.doneBytes)} / ${mb(p.totalBytes)} MB`);
  });

  const tokenizer = await loadTokenizer(manifest, MANIFEST_URL, progress);
  // one error scope for the three concurrent loads: WebGPU's error scopes are a stack, not per task
  const models = await withGpuErrorCheck(device, "loading the model",
    () => loadSubmodels(globalThis.tvmjs, device, manifest, MANIFEST_URL, progress));
  const sd = new StableDiffusion(manifest, tokenizer, models);
  const latentsUrl = params.get("latents");
  const fixedLatents = latentsUrl ? await loadLatentsFromUrl(latentsUrl, sd.latentCount) : null;
  return { manifest, device, sd, fixedLatents };
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
  };
}

function applyUrlParams() {
  const map = { prompt: "prompt", negative: "negative-prompt", steps: "steps", guidance: "guidance", seed: "seed",
    scheduler: "scheduler", preview: "preview-every" };
  for (const [key, id] of Object.entries(map)) {
    if (params.has(key)) $(id).value = params.get(key);
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

  let loaded = null;
  let busy = false;
  let lastSeed = 0;

  async function generate(opts) {
    if (!loaded) throw new Error("the model is not loaded yet (await window.websd.ready)");
    if (busy) throw new Error("a generation is already running");
    busy = true;
    $("generate").disabled = true;
    $("error").hidden = true;
    setState("running");
    const o = { ...DEFAULTS, latents: loaded.fixedLatents ?? undefined, ...opts };
    const started = performance.now();
    try {
      const image = await withGpuErrorCheck(loaded.device, "generating", () =>
        loaded.sd.generate(o, ({ step, steps, preview }) => {
          showProgress(step / steps, `Denoising: step ${step} / ${steps}`);
          if (preview) draw(preview);
        }));
      draw(image);
      lastSeed = o.seed;
      $("download").disabled = false;
      showProgress(1, `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
      setState("done");
      return image;
    } catch (err) {
      showError(err);
      throw err;
    } finally {
      busy = false;
      $("generate").disabled = false;
    }
  }

  $("controls").addEventListener("submit", (e) => {
    e.preventDefault();
    generate(readControls()).catch(() => {}); // already shown
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

  const ready = load().then((l) => {
    loaded = l;
    window.websd.manifest = l.manifest;
    if (l.fixedLatents) {
      $("latents-note").textContent = "Initial noise comes from the latents URL (the seed is ignored).";
      $("latents-note").hidden = false;
    }
    $("generate").disabled = false;
    showProgress(1, "Ready.");
    setState("ready");
    if (params.get("autorun") === "1") generate(readControls()).catch(() => {});
  });
  ready.catch(showError);

  window.websd = { ready, generate, manifest: null, schedulers: Object.keys(SCHEDULERS) };
}

setup();
