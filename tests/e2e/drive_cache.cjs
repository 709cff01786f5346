// Drives the page through the weight cache, the worker and Cancel in headless Chromium, for
// tests/e2e/test_page_cache.py. One browser profile, fresh at the start, through these phases:
//
//   interrupted  first visit with one shard failing (HTTP 503): the page stops with an error; then what the
//                cache holds ({sha256: bytes}) once every download has ended (read from a same-origin page with no
//                worker running)
//   resumed      the next visit: what it requested (it should be only what the cache lacked)
//   cached       a third visit: what it requested (nothing of the model), load stats
//   generate     one image through window.websd.generate(); the main thread's long tasks meanwhile
//                (PerformanceObserver "longtask"); a screenshot of the page
//   cancel       a long generation, Cancel clicked after step `cancelAfter`: the steps seen after the click, the
//                state after it, and a short generation afterwards
//   tampered     one cache entry replaced by altered bytes, then a visit: what it requested, load stats
//   deleted      "Delete cached model" clicked: the cache status after
//   quota        the origin's quota cut to `quotaBytes` (DevTools protocol), a visit with an empty cache: the
//                notice, the state, a 2-step image, what got cached (and navigator.storage.estimate(), which
//                Chromium 156 does not change with the override)
//
//   node tests/e2e/drive_cache.cjs SPEC.json
//   SPEC = {url, userDataDir, timeoutMs, failPath (site path of the shard to fail), tamperSha256, tamperPath,
//           steps, cancelSteps, cancelAfter, quotaBytes, screenshot}
// Prints one JSON line: {phases: {name: {...}}, console: [...]}.
"use strict";

const fs = require("node:fs");
const { launch, watchConsole } = require("./browser.cjs");

const CACHE_NAME = "websd-weights-v1"; // web/src/weight_cache.js

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const timeout = spec.timeoutMs ?? 600000;
  const out = { phases: {}, console: [] };
  const server = async (what) => (await fetch(new URL(`__test/${what}`, spec.url))).json();
  const requestsSince = async (mark) => (await server("requests")).slice(mark).filter((p) => p.startsWith("model/"));
  const { context, page } = await launch(spec.userDataDir, timeout);
  // every long task of the main thread, from the page's start
  await context.addInitScript(() => {
    window.__longTasks = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, ms: e.duration });
    }).observe({ type: "longtask", buffered: true });
  });
  watchConsole(page, out.console);

  const pageState = () => page.evaluate(() => ({ state: document.body.dataset.state,
    error: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
    notice: document.getElementById("notice").hidden ? null : document.getElementById("notice").textContent,
    cacheText: document.getElementById("cache-text").textContent, loadStats: window.websd?.loadStats ?? null }));
  const visit = async () => {
    const mark = (await server("requests")).length;
    const t0 = Date.now();
    await page.goto(spec.url);
    // ready, and what the load fetched stored (the page does not wait for that); or an error
    await page.waitForFunction(() => document.body.dataset.state === "error" ||
      (document.body.dataset.state === "ready" && document.body.dataset.cacheStored === "1"), null, { timeout });
    return { loadMs: Date.now() - t0, ...(await pageState()), requests: await requestsSince(mark) };
  };
  const cachedKeys = async () => {
    await page.goto(new URL("model/manifest.json", spec.url).href); // same origin, no page script, no worker
    return page.evaluate(async (name) => {  // {sha256: stored bytes}
      const cache = await caches.open(name);
      const sizes = {};
      for (const r of await cache.keys()) sizes[r.url.split("/").pop()] = (await (await cache.match(r)).arrayBuffer()).byteLength;
      return sizes;
    }, CACHE_NAME);
  };
  const settle = async () => { // until no request has come for 2 s: the downloads of the failed load ended
    let n = -1;
    for (;;) {
      const now = (await server("requests")).length;
      if (now === n) return;
      n = now;
      await new Promise((r) => setTimeout(r, 2000));
    }
  };

  try {
    await server(`fail?path=${encodeURIComponent(spec.failPath)}`);
    const interrupted = await visit();
    await settle();
    await server("fail");
    interrupted.cachedAfter = await cachedKeys();
    out.phases.interrupted = interrupted;
    out.phases.resumed = await visit();
    out.phases.cached = await visit();

    // one image; the long tasks of the main thread while it is made
    const gen = await page.evaluate(async (steps) => {
      const opts = { prompt: "a photo of an astronaut riding a horse", seed: 3, steps };
      for (const key of ["prompt", "seed", "steps"]) document.getElementById(key).value = String(opts[key]);
      const before = window.__longTasks.length;
      const t0 = performance.now();
      const image = await window.websd.generate(opts);  // the controls show its settings, for the screenshot
      return { ms: performance.now() - t0, width: image.width, height: image.height, start: t0,
        longTasks: window.__longTasks.slice(before), state: document.body.dataset.state };
    }, spec.steps);
    out.phases.generate = gen;
    await page.screenshot({ path: spec.screenshot, fullPage: true });

    // Cancel, clicked as a user does, after step cancelAfter of a long generation
    await page.evaluate((steps) => {
      window.__steps = [];
      const text = document.getElementById("status-text");
      new MutationObserver(() => {
        const m = /step (\d+) \//.exec(text.textContent);
        if (m) window.__steps.push(Number(m[1]));
      }).observe(text, { childList: true, characterData: true, subtree: true });
      window.__cancelRun = window.websd.generate({ prompt: "a cat", seed: 5, steps })
        .then(() => "finished", (err) => (err.cancelled ? "cancelled" : `error: ${err.message}`));
    }, spec.cancelSteps);
    await page.waitForFunction((k) => window.__steps.some((s) => s >= k), spec.cancelAfter, { timeout });
    const stepAtClick = await page.evaluate(() => Math.max(...window.__steps));
    await page.click("#cancel");
    const outcome = await page.evaluate(() => window.__cancelRun);
    const after = await page.evaluate(() => ({ lastStep: Math.max(...window.__steps),
      state: document.body.dataset.state, status: document.getElementById("status-text").textContent }));
    const next = await page.evaluate(async () => {
      const image = await window.websd.generate({ prompt: "a dog", seed: 6, steps: 2 });
      return { state: document.body.dataset.state, width: image.width };
    });
    out.phases.cancel = { stepAtClick, outcome, ...after, next };

    // a cache entry altered behind the page's back
    await page.evaluate(async ({ name, sha }) => {
      const cache = await caches.open(name);
      const key = (await cache.keys()).find((r) => r.url.endsWith(`/${sha}`));
      const bytes = new Uint8Array(await (await cache.match(key)).arrayBuffer());
      bytes[bytes.length >> 1] ^= 0xff;
      await cache.put(key, new Response(bytes));
    }, { name: CACHE_NAME, sha: spec.tamperSha256 });
    out.phases.tampered = await visit();
    out.phases.tampered.again = (await visit()).requests;

    // the page's Delete button
    await page.click("#delete-cache");
    await page.waitForFunction(() => /: 0 of/.test(document.getElementById("cache-text").textContent));
    out.phases.deleted = { cacheText: (await pageState()).cacheText, cachedAfter: await cachedKeys() };

    // too little storage for the model
    const cdp = await context.newCDPSession(page);
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: new URL(spec.url).origin, quotaSize: spec.quotaBytes });
    const quota = await visit();
    quota.estimate = await page.evaluate(() => navigator.storage.estimate());
    quota.image = await page.evaluate(async () => {
      const image = await window.websd.generate({ prompt: "a tree", seed: 8, steps: 2 });
      return { state: document.body.dataset.state, width: image.width };
    });
    quota.cachedAfter = await cachedKeys();
    out.phases.quota = quota;
  } finally {
    await context.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  console.error(`drive_cache failed: ${err?.stack ?? err}`);
  process.exit(2);
});
