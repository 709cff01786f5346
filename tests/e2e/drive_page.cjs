// Drives the websd page in headless Chromium (Debian's /usr/bin/chromium via playwright-core) for
// tests/e2e/test_page_vs_diffusers.py.
//
//   node tests/e2e/drive_page.cjs SPEC.json
//
// SPEC = {
//   url,                 the page (served from the build output)
//   userDataDir,         a fresh, empty directory: the browser profile (nothing cached from earlier runs)
//   outDir,              where the pixels of each run are written (<name>.f32: the VAE output, H*W*3 float32,
//                        0..255; <name>.rgba: the canvas bytes)
//   timeoutMs,           for the page load and for each generation
//   runs: [{name, options, via?, latentsFile?, screenshot?}]
//                        via "api" (default): options go to window.websd.generate(); latentsFile (raw
//                        little-endian float32) becomes options.latents. via "form": the options are typed into
//                        the page's controls and the Generate button is clicked, as a user does (no latents; only
//                        the canvas bytes are read back). Either way the controls show the run's settings, so
//                        the screenshot (a PNG of the page after that run) documents what was generated.
//   screenshot?          a PNG of the page after loading (e.g. to show an error)
//   countRequests?       the server records requests (page_driver.serving(record=True)): wait until the load's
//                        files are stored in the weight cache, and give each run the model/ paths requested
//                        during it (run.requests)
// }
// Prints one JSON line: {loadState, error, loadMs, runs: [{name, state, width, height, ms, pixelsFile, rgbaFile}],
// canvasBlank, browserMs, console: [messages of type error/warning]}. Exit code 0 unless the driver itself failed
// (a page that shows an error is a result, not a driver failure).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { launch, watchConsole } = require("./browser.cjs");

// In the page: type generate() options into the controls (ids from index.html).
function fillControls(opts) {
  const ids = { prompt: "prompt", negativePrompt: "negative-prompt", steps: "steps", guidance: "guidance",
    seed: "seed", scheduler: "scheduler", previewEvery: "preview-every" };
  for (const [key, id] of Object.entries(ids)) {
    if (opts[key] !== undefined) document.getElementById(id).value = String(opts[key]);
  }
}

// In the page: one window.websd.generate() call; the VAE output floats and the canvas bytes.
async function generateWithApi(opts) {
  if (opts.latents) opts.latents = Float32Array.from(opts.latents);
  try {
    const image = await window.websd.generate(opts);
    return { width: image.width, height: image.height, pixels: Array.from(image.pixels),
      rgba: Array.from(image.rgba), state: document.body.dataset.state };
  } catch (err) {
    return { error: String(err?.message ?? err), state: document.body.dataset.state };
  }
}

// Click Generate and wait for the page to finish; the image is what the canvas shows.
async function generateWithForm(page, timeout) {
  // record every state change from the click on: "done" from an earlier run must not count
  await page.evaluate(() => {
    window.__e2eObserver?.disconnect();
    window.__e2eStates = [];
    window.__e2eObserver = new MutationObserver(() => window.__e2eStates.push(document.body.dataset.state));
    window.__e2eObserver.observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
  });
  await page.click("#generate");
  await page.waitForFunction(() => window.__e2eStates.includes("running") &&
    ["done", "error"].includes(window.__e2eStates.at(-1)), null, { timeout });
  return page.evaluate(() => {
    const state = document.body.dataset.state;
    if (state === "error") return { state, error: document.getElementById("error").textContent };
    const c = document.getElementById("canvas");
    const rgba = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    return { state, width: c.width, height: c.height, rgba: Array.from(rgba) };
  });
}

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  fs.mkdirSync(spec.outDir, { recursive: true });
  const timeout = spec.timeoutMs ?? 600000;
  const result = { loadState: null, error: null, loadMs: null, runs: [], canvasBlank: null, console: [] };
  const started = Date.now();
  // a persistent context on a fresh directory is the only way to choose the profile directory with playwright
  const { context, page } = await launch(spec.userDataDir, timeout);
  try {
    watchConsole(page, result.console);

    await page.goto(spec.url);
    await page.waitForFunction(() => ["ready", "error", "done"].includes(document.body.dataset.state), null,
      { timeout });
    result.loadMs = Date.now() - started;
    result.loadState = await page.evaluate(() => document.body.dataset.state);
    result.error = await page.evaluate(() => {
      const el = document.getElementById("error");
      return el.hidden ? null : el.textContent;
    });

    const requests = async () => (spec.countRequests
      ? (await (await fetch(new URL("__test/requests", spec.url))).json()) : []);
    if (result.loadState === "ready" && spec.countRequests) {
      await page.waitForFunction(() => document.body.dataset.cacheStored === "1", null, { timeout });
    }
    if (result.loadState === "ready") {
      for (const run of spec.runs ?? []) {
        const mark = (await requests()).length;
        const options = { ...run.options };
        if (run.latentsFile) {
          const buf = fs.readFileSync(run.latentsFile);
          options.latents = Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
        }
        await page.evaluate(fillControls, run.options);
        const t0 = Date.now();
        const out = run.via === "form" ? await generateWithForm(page, timeout)
          : await page.evaluate(generateWithApi, options);
        const entry = { name: run.name, via: run.via ?? "api", state: out.state, ms: Date.now() - t0,
          error: out.error ?? null };
        if (spec.countRequests) entry.requests = (await requests()).slice(mark).filter((p) => p.startsWith("model/"));
        if (!out.error) {
          entry.width = out.width;
          entry.height = out.height;
          if (out.pixels) {
            entry.pixelsFile = path.join(spec.outDir, `${run.name}.f32`);
            fs.writeFileSync(entry.pixelsFile, Buffer.from(Float32Array.from(out.pixels).buffer));
          }
          entry.rgbaFile = path.join(spec.outDir, `${run.name}.rgba`);
          fs.writeFileSync(entry.rgbaFile, Buffer.from(Uint8Array.from(out.rgba).buffer));
        }
        if (run.screenshot) {
          await page.screenshot({ path: run.screenshot, fullPage: true });
          entry.screenshot = run.screenshot;
        }
        result.runs.push(entry);
      }
    }
    // whether anything was ever drawn (the page's canvas starts fully transparent)
    result.canvasBlank = await page.evaluate(() => {
      const c = document.getElementById("canvas");
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return false;
      return true;
    });
    if (spec.screenshot) await page.screenshot({ path: spec.screenshot, fullPage: true });
  } finally {
    await context.close();
  }
  result.browserMs = Date.now() - started;
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err) => {
  console.error(`drive_page failed: ${err?.stack ?? err}`);
  process.exit(2);
});
