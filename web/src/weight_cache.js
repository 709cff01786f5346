// The weight cache: model files kept between visits, keyed by the sha256 the manifest lists (a rebuilt file has
// another key, so it is never served stale, and two models never collide), checked on the way in and on the way
// out.
//
// A cache is any object with this interface (BrowserWeightCache here; FsWeightCache in web/runner/fs_cache.js):
//   get(sha256) -> Promise<Uint8Array | null>     the stored bytes, or null
//   put(sha256, bytes) -> Promise<void>           stores all of bytes or nothing; may throw QuotaExceededError
//   delete(sha256) -> Promise<void>
//   keys() -> Promise<string[]>                   the stored sha256s
//
// The browser's is the Cache API, not the Origin Private File System: Cache.put() commits an entry only once its
// whole body is stored, so a download cut short, a closed tab or a QuotaExceededError can never leave a partial
// entry that looks cached (an OPFS file is visible while it is written, and would need our own commit marker);
// and the Cache API works alike in the page and in its worker, where OPFS' synchronous handles are worker-only.

import { PageError } from "./gpu.js";
import { fetchVerified, filesToFetch, verifyBytes } from "./loader.js";

export const CACHE_NAME = "websd-weights-v1";
const SHA256 = /^[0-9a-f]{64}$/;
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

export const isQuotaError = (err) => err?.name === "QuotaExceededError";

/** Model files in the Cache API, one entry per sha256 (a same-origin URL that is never fetched, only a key). */
export class BrowserWeightCache {
  constructor(caches = globalThis.caches, origin = globalThis.location?.origin, name = CACHE_NAME) {
    this.caches = caches;
    this.prefix = `${origin}/.websd-weight-cache/sha256/`;
    this.name = name;
  }

  /**
   * A cache when this context has a working Cache API, else null (no cache: the page downloads every visit).
   * It needs a secure context (https or localhost), and a private window may refuse to open one.
   */
  static async create() {
    if (!globalThis.caches || !globalThis.location) return null;
    const cache = new BrowserWeightCache();
    try {
      await cache.caches.open(cache.name);
      return cache;
    } catch {
      return null;
    }
  }

  async get(sha256) {
    const res = await (await this.caches.open(this.name)).match(this.prefix + sha256);
    return res ? new Uint8Array(await res.arrayBuffer()) : null;
  }

  async put(sha256, bytes) {
    const body = new Response(bytes, { headers: { "content-type": "application/octet-stream" } });
    await (await this.caches.open(this.name)).put(this.prefix + sha256, body);
  }

  async delete(sha256) {
    await (await this.caches.open(this.name)).delete(this.prefix + sha256);
  }

  async keys() {
    const requests = await (await this.caches.open(this.name)).keys();
    return requests.map((r) => r.url.slice(this.prefix.length)).filter((k) => SHA256.test(k));
  }
}

/** What of the files a load reads (loader.js filesToFetch) the cache holds: {files, bytes, cachedFiles,
 * cachedBytes}. */
export async function cacheStatus(cache, manifest) {
  const stored = new Set(cache ? await cache.keys() : []);
  const entries = filesToFetch(manifest).map((p) => manifest.files[p]).filter(Boolean);
  const cached = entries.filter((e) => stored.has(e.sha256));
  const sum = (es) => es.reduce((s, e) => s + e.bytes, 0);
  return { files: entries.length, bytes: sum(entries), cachedFiles: cached.length, cachedBytes: sum(cached) };
}

/** Delete every cached file of the manifest (a file another model shares is fetched again by that model). */
export async function deleteCachedModel(cache, manifest) {
  for (const { sha256 } of new Set(Object.values(manifest.files))) await cache.delete(sha256);
}

/**
 * Whether the files still to cache fit the browser's storage, as a sentence when they do not (else null);
 * asks for persistent storage (so the browser does not evict the weights under pressure) and says if refused.
 * @param {StorageManager|undefined} storage navigator.storage
 */
export async function checkStorage(cache, manifest, storage = globalThis.navigator?.storage) {
  if (!cache || !storage?.estimate) return { fits: true, persisted: null, notice: null };
  const status = await cacheStatus(cache, manifest);
  const need = status.bytes - status.cachedBytes;
  const { usage = 0, quota = Infinity } = await storage.estimate();
  const free = quota - usage;
  const persisted = storage.persist ? await storage.persist().catch(() => false) : null;
  if (need <= free) return { fits: true, persisted, need, free, notice: null };
  return { fits: false, persisted, need, free,
    notice: `Not enough browser storage to keep this model: it needs ${mb(need)} more, ${mb(Math.max(free, 0))} ` +
      "are free. It runs anyway, but is downloaded again on every visit; free space (or delete other cached " +
      "models) to keep it." };
}

/**
 * The model's files, from the cache when it holds them (checked again: a bad entry is dropped and fetched), else
 * from the network (checked, then stored). Counts what came from where in `stats`.
 */
export class ModelFiles {
  /**
   * @param {URL|string} baseUrl the manifest's URL (paths are relative to it)
   * @param {object} files manifest.files
   * @param {{fetch?: Function, cache?: object|null, store?: boolean, onNotice?: (text: string) => void}} options
   *   store: false reads the cache but adds nothing (checkStorage said it will not fit)
   */
  constructor(baseUrl, files, { fetch = globalThis.fetch, cache = null, store = true, onNotice = () => {} } = {}) {
    Object.assign(this, { baseUrl, files, fetchFn: fetch, cache, store: store && !!cache, onNotice });
    this.storing = [];  // puts under way: a load does not wait for them (the first load is no slower)
    this.refused = false;
    this.stats = { cachedFiles: 0, cachedBytes: 0, fetchedFiles: 0, fetchedBytes: 0, storedFiles: 0,
      dropped: [], fetched: [] };
  }

  /** One file's verified bytes; `onBytes(received)` reports progress within it. */
  async get(path, onBytes = () => {}) {
    const entry = this.files[path];
    if (!entry) throw new PageError(`model/${path} is not listed in manifest.json "files": rebuild the site.`);
    // a cache that fails to read is a miss: the network still has the file
    const cached = this.cache ? await this.cache.get(entry.sha256).catch(() => null) : null;
    if (cached) {
      try {
        await verifyBytes(path, entry, cached);
        this.stats.cachedFiles++;
        this.stats.cachedBytes += cached.length;
        onBytes(cached.length);
        return cached;
      } catch (err) {  // bit rot, a tampered or truncated entry: never used, fetched again
        this.stats.dropped.push(path);
        await this.cache.delete(entry.sha256);
      }
    }
    const data = await fetchVerified(this.baseUrl, path, this.files, onBytes, this.fetchFn);
    this.stats.fetchedFiles++;
    this.stats.fetchedBytes += data.length;
    this.stats.fetched.push(path);
    if (this.store) this.storing.push(this.keep(path, entry, data));
    return data;
  }

  /** Wait until every file fetched so far is stored (or refused). */
  async flush() {
    await Promise.all(this.storing);
  }

  async keep(path, entry, data) {
    try {
      await this.cache.put(entry.sha256, data);
      this.stats.storedFiles++;
    } catch (err) {
      this.store = false;  // no more puts after a refusal
      await this.cache.delete(entry.sha256).catch(() => {});  // nothing half-stored stays
      if (this.refused) return;  // one message, not one per file
      this.refused = true;
      this.onNotice(isQuotaError(err)
        ? `The browser's storage is full: model/${path} and the files after it are not kept (the model runs ` +
          "anyway, and they are downloaded again next visit). Free space or delete cached models."
        : `Model files cannot be kept in the browser (${err.message ?? err}); they are downloaded every visit.`);
    }
  }
}
