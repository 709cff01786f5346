// The weight cache: files keyed by sha256, checked when stored and when read, an interrupted load resumed, the
// storage check and a full disk - through the page's ModelFiles on the runner's filesystem cache (the same
// interface as the browser's Cache API one, which tests/e2e/test_page_cache.py drives in Chromium).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, writeFile, mkdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { FsWeightCache } from "../runner/fs_cache.js";
import { cacheStatus, checkStorage, deleteCachedModel, ModelFiles } from "../src/weight_cache.js";

const BASE = new URL("http://127.0.0.1:8000/model/manifest.json");
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const SITE = Object.fromEntries([0, 1, 2, 3].map((i) => [`params/unet/params_shard_${i}.bin`,
  new Uint8Array(1000 + i).map((_, j) => (i * 31 + j) % 251)]));
const FILES = Object.fromEntries(Object.entries(SITE).map(([p, b]) => [p, { sha256: sha256(b), bytes: b.length }]));
const MANIFEST = { files: FILES, tokenizer: { vocab: "tokenizer/vocab.json" },
  submodels: Object.fromEntries(["clip", "unet", "vae"].map((s) => [s, { wasm: `${s}.wasm`, params: `params/${s}/` }])) };

/** A fetch over SITE that counts requests by path and fails the paths in `failing` (a dropped connection). */
function countingFetch(failing = new Set()) {
  const requests = [];
  const fetch = async (url) => {
    const p = new URL(url).href.slice(new URL(".", BASE).href.length);
    requests.push(p);
    if (failing.has(p)) throw new TypeError("network error");
    return new Response(SITE[p]);
  };
  return { fetch, requests };
}

const tmpCache = async () => new FsWeightCache(path.join(await mkdtemp(path.join(os.tmpdir(), "wc-")), "cache"));
const loadAll = async (files) => {
  try {
    for (const p of Object.keys(FILES)) assert.deepEqual(await files.get(p), SITE[p]);
  } finally {
    await files.flush();  // the puts a load does not wait for
  }
};

test("the second load reads every file from the cache and makes no request", async () => {
  const cache = await tmpCache();
  const first = countingFetch();
  const a = new ModelFiles(BASE, FILES, { fetch: first.fetch, cache });
  await loadAll(a);
  assert.equal(first.requests.length, 4);
  assert.equal(a.stats.storedFiles, 4);
  assert.deepEqual((await cache.keys()).sort(), Object.values(FILES).map((e) => e.sha256).sort());
  const second = countingFetch();
  const b = new ModelFiles(BASE, FILES, { fetch: second.fetch, cache });
  await loadAll(b);
  assert.deepEqual(second.requests, []);
  assert.equal(b.stats.cachedFiles, 4);
  assert.equal(b.stats.cachedBytes, Object.values(SITE).reduce((s, x) => s + x.length, 0));
});

test("a cache entry that fails its check on reading is dropped and fetched again", async () => {
  const cache = await tmpCache();
  await loadAll(new ModelFiles(BASE, FILES, { fetch: countingFetch().fetch, cache }));
  const victim = "params/unet/params_shard_2.bin";
  const bad = SITE[victim].slice();
  bad[7] ^= 1;
  await writeFile(cache.file(FILES[victim].sha256), bad);  // bit rot: same size, other sha256
  await writeFile(cache.file(FILES["params/unet/params_shard_0.bin"].sha256), SITE[victim].slice(0, 10));
  const again = countingFetch();
  const files = new ModelFiles(BASE, FILES, { fetch: again.fetch, cache });
  await loadAll(files);
  assert.deepEqual(again.requests.sort(), ["params/unet/params_shard_0.bin", victim]);
  assert.deepEqual(files.stats.dropped.sort(), ["params/unet/params_shard_0.bin", victim]);
  assert.deepEqual(await cache.get(FILES[victim].sha256), SITE[victim]);  // stored good again
});

test("an interrupted first load keeps what it stored; the next load fetches only the rest", async () => {
  const cache = await tmpCache();
  const cut = countingFetch(new Set(["params/unet/params_shard_2.bin"]));
  await assert.rejects(loadAll(new ModelFiles(BASE, FILES, { fetch: cut.fetch, cache })), /Cannot fetch/);
  assert.equal((await cache.keys()).length, 2);
  const resumed = countingFetch();
  await loadAll(new ModelFiles(BASE, FILES, { fetch: resumed.fetch, cache }));
  assert.deepEqual(resumed.requests, ["params/unet/params_shard_2.bin", "params/unet/params_shard_3.bin"]);
});

test("a full store gives one notice, keeps nothing half-stored and the load goes on", async () => {
  const cache = await tmpCache();
  let puts = 0;
  const full = Object.create(cache, { put: { value: async (sha, bytes) => {
    if (++puts >= 2) {  // what a browser does past the quota: the entry is not committed
      throw new DOMException("quota", "QuotaExceededError");
    }
    return cache.put(sha, bytes);
  } } });
  const notices = [];
  const files = new ModelFiles(BASE, FILES, { fetch: countingFetch().fetch, cache: full, onNotice: (t) => notices.push(t) });
  await loadAll(files);
  assert.equal(notices.length, 1);
  assert.match(notices[0], /storage is full: model\/params\/unet\/params_shard_1\.bin and the files after it/);
  assert.equal(puts, 2);  // no more attempts after the first refusal
  assert.deepEqual(await cache.keys(), [FILES["params/unet/params_shard_0.bin"].sha256]);
  assert.deepEqual(await cacheStatus(cache, MANIFEST), { files: 4, bytes: 4006, cachedFiles: 1, cachedBytes: 1000 });
});

test("checkStorage says plainly when the model will not fit, asks for persistence, and counts what is cached", async () => {
  const cache = await tmpCache();
  let persistAsked = 0;
  const storage = (quota) => ({ estimate: async () => ({ usage: 500, quota }),
    persist: async () => { persistAsked++; return true; } });
  const small = await checkStorage(cache, MANIFEST, storage(2500));
  assert.equal(small.fits, false);
  assert.match(small.notice, /Not enough browser storage to keep this model: it needs 0\.0 MB more, 0\.0 MB are free/);
  assert.equal(small.need, 4006);
  assert.equal(persistAsked, 1);
  await cache.put(FILES["params/unet/params_shard_3.bin"].sha256, SITE["params/unet/params_shard_3.bin"]);
  await cache.put(FILES["params/unet/params_shard_2.bin"].sha256, SITE["params/unet/params_shard_2.bin"]);
  const enough = await checkStorage(cache, MANIFEST, storage(2600));  // only the uncached half is needed
  assert.deepEqual([enough.fits, enough.need, enough.notice, enough.persisted], [true, 2001, null, true]);
  // a store that will not fit is read but not written
  const req = countingFetch();
  const files = new ModelFiles(BASE, FILES, { fetch: req.fetch, cache, store: small.fits });
  await loadAll(files);
  assert.equal(req.requests.length, 2);
  assert.equal((await cache.keys()).length, 2);
});

test("deleting a cached model removes its files and only them", async () => {
  const cache = await tmpCache();
  await loadAll(new ModelFiles(BASE, FILES, { fetch: countingFetch().fetch, cache }));
  const other = new Uint8Array(5).fill(1);
  await cache.put(sha256(other), other);
  await deleteCachedModel(cache, MANIFEST);
  assert.deepEqual(await cache.keys(), [sha256(other)]);
  assert.equal((await cacheStatus(cache, MANIFEST)).cachedFiles, 0);
});

test("the filesystem cache never leaves a partial file and refuses keys that are not sha256s", async () => {
  const cache = await tmpCache();
  const key = sha256(Uint8Array.of(1));
  await mkdir(path.join(cache.file(key), "blocker"), { recursive: true });  // rename onto a non-empty directory fails
  await assert.rejects(cache.put(key, Uint8Array.of(1)));
  assert.deepEqual((await readdir(cache.dir)).filter((n) => n.endsWith(".tmp")), []);
  assert.throws(() => cache.file("../../etc/passwd"), /not a sha256/);
  assert.equal(await cache.get(sha256(Uint8Array.of(2))), null);
});

test("a cache that fails to read is a miss, and a context without a usable Cache API gets no cache", async () => {
  const broken = { get: async () => { throw new Error("storage backend gone"); }, put: async () => {},
    delete: async () => {}, keys: async () => [] };
  const req = countingFetch();
  await loadAll(new ModelFiles(BASE, FILES, { fetch: req.fetch, cache: broken }));
  assert.equal(req.requests.length, 4);
  const { BrowserWeightCache } = await import("../src/weight_cache.js");
  globalThis.location = { origin: "http://127.0.0.1:8000" };
  globalThis.caches = { open: async () => { throw new DOMException("private window", "SecurityError"); } };
  try {
    assert.equal(await BrowserWeightCache.create(), null);
  } finally {
    delete globalThis.caches;
    delete globalThis.location;
  }
});
