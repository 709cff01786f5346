// Loading: manifest checks, integrity of every fetched file, and the weights reaching the TVM tensor cache
// in tensor-cache.json order (the order the Relax functions take them in).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  fetchVerified, filesToFetch, float16ToFloat32, loadManifest, Progress, TvmSubmodel,
} from "../src/loader.js";
import { PageError } from "../src/gpu.js";
import { ModelFiles } from "../src/weight_cache.js";

const BASE = new URL("http://127.0.0.1:8000/model/manifest.json");
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** A fetch over an in-memory site: {path relative to BASE: Uint8Array | object (JSON)}. */
function fakeFetch(site) {
  return async (url) => {
    const path = new URL(url).href.slice(new URL(".", BASE).href.length);
    if (!(path in site)) return new Response("not found", { status: 404 });
    const body = site[path] instanceof Uint8Array ? site[path] : JSON.stringify(site[path]);
    return new Response(body, { status: 200 });
  };
}

/** The loader's source of verified files over an in-memory site, with no cache. */
const filesFrom = (manifest, site) => new ModelFiles(BASE, manifest.files, { fetch: fakeFetch(site) });

function filesOf(site) {
  return Object.fromEntries(Object.entries(site).map(([p, b]) => [p, { sha256: sha256(b), bytes: b.length }]));
}

test("fetchVerified returns the bytes when size and sha256 match, and reports progress", async () => {
  const data = new Uint8Array(100000).map((_, i) => i % 251);
  const site = { "params/unet/params_shard_0.bin": data };
  const seen = [];
  const got = await fetchVerified(BASE, "params/unet/params_shard_0.bin", filesOf(site), (n) => seen.push(n),
    fakeFetch(site));
  assert.deepEqual(got, data);
  assert.equal(seen.at(-1), data.length);
});

test("a missing shard is named", async () => {
  const files = filesOf({ "params/unet/params_shard_1.bin": new Uint8Array(8) });
  await assert.rejects(fetchVerified(BASE, "params/unet/params_shard_1.bin", files, undefined, fakeFetch({})),
    (e) => e instanceof PageError && /params_shard_1\.bin is missing \(HTTP 404\)/.test(e.message));
});

test("a tampered shard (same size) is refused by its sha256", async () => {
  const good = new Uint8Array(64).fill(7);
  const bad = good.slice();
  bad[10] ^= 1;
  await assert.rejects(fetchVerified(BASE, "s.bin", filesOf({ "s.bin": good }), undefined, fakeFetch({ "s.bin": bad })),
    /s\.bin is corrupt: its sha256/);
});

test("truncated and grown shards are refused by size", async () => {
  const good = new Uint8Array(64).fill(7);
  const files = filesOf({ "s.bin": good });
  await assert.rejects(fetchVerified(BASE, "s.bin", files, undefined, fakeFetch({ "s.bin": good.slice(0, 60) })),
    /has 60 bytes, manifest.json lists 64/);
  await assert.rejects(fetchVerified(BASE, "s.bin", files, undefined, fakeFetch({ "s.bin": new Uint8Array(70) })),
    /larger than the 64 bytes/);
});

test("a file the manifest does not list is refused", async () => {
  await assert.rejects(fetchVerified(BASE, "x.bin", {}, undefined, fakeFetch({ "x.bin": new Uint8Array(1) })),
    /not listed in manifest.json/);
});

test("loadManifest names missing fields and a missing manifest", async () => {
  await assert.rejects(loadManifest(BASE.href, fakeFetch({})), /HTTP 404/);
  const partial = { latent_width: 8, latent_height: 8, submodels: { clip: { wasm: "clip.wasm" } } };
  await assert.rejects(loadManifest(BASE.href, fakeFetch({ "manifest.json": partial })),
    (e) => /latent_channels/.test(e.message) && /submodels\.unet\.wasm/.test(e.message) && /files/.test(e.message));
});

test("float16 decoding", () => {
  const bits = Uint16Array.of(0x3c00, 0xc000, 0x0000, 0x7bff, 0x0001, 0x7c00);
  assert.deepEqual(Array.from(float16ToFloat32(bits)), [1, -2, 0, 65504, 2 ** -24, Infinity]);
});

/** A stand-in for tvmjs: records what the loader does with it. */
function fakeTvmjs() {
  const log = { cache: [], initWebGPU: 0, shaders: 0, params: null, scopes: 0 };
  const tensor = (shape, dtype) => ({
    shape, dtype, bytes: null,
    copyFromRawBytes(b) { this.bytes = Array.from(b); return this; },
  });
  const instance = {
    initWebGPU() { log.initWebGPU++; },
    systemLib: () => ({}),
    asyncLoadWebGPUPipelines: async () => { log.shaders++; },
    webgpu: () => ({ sync: async () => {} }),
    cpu: () => ({}),
    empty: (shape, dtype) => tensor(shape, dtype),
    tensorCacheUpdate: (name, arr) => log.cache.push({ name, bytes: arr.bytes, shape: arr.shape }),
    beginScope() { log.scopes++; },
    endScope() { log.scopes--; },
    detachFromCurrentScope: (x) => x,
    createVirtualMachine: () => ({ getFunction: (name) => ({ fn: name }) }),
    getParamsFromCacheByName: (names) => { log.params = names; return { names }; },
  };
  return {
    log,
    tvmjs: { instantiate: async () => instance, createPolyfillWASI: () => ({}) },
  };
}

test("TvmSubmodel.load uploads verified weights and binds them in the function's parameter order", async () => {
  const shard0 = Uint8Array.of(1, 0, 0, 0, 2, 0, 0, 0, 9, 9, 9, 9);
  const shard1 = Uint8Array.of(0, 0, 128, 63); // 1.0f
  const cache = {
    // the function's parameter order; the records are in another (a large tensor gets a shard of its own)
    metadata: { param_names: ["w_a", "w_c", "w_b"] },
    records: [
      { dataPath: "params_shard_0.bin", format: "raw-shard", nbytes: 12, records: [
        { name: "w_b", shape: [2], dtype: "int32", format: "raw", nbytes: 8, byteOffset: 0 },
        { name: "w_a", shape: [1], dtype: "float32", format: "raw", nbytes: 4, byteOffset: 8 }] },
      { dataPath: "params_shard_1.bin", format: "raw-shard", nbytes: 4, records: [
        { name: "w_c", shape: [1, 1], dtype: "float32", format: "raw", nbytes: 4, byteOffset: 0 }] },
    ],
  };
  const site = {
    "clip.wasm": Uint8Array.of(0, 97, 115, 109),
    "params/clip/tensor-cache.json": new TextEncoder().encode(JSON.stringify(cache)),
    "params/clip/params_shard_0.bin": shard0,
    "params/clip/params_shard_1.bin": shard1,
  };
  const manifest = {
    files: filesOf(site), submodels: { clip: { wasm: "clip.wasm", params: "params/clip", function: "clip" } },
  };
  const { log, tvmjs } = fakeTvmjs();
  const stages = [];
  const progress = new Progress(100, (p) => stages.push(p.stage));
  const model = await TvmSubmodel.load(tvmjs, {}, "clip", manifest, filesFrom(manifest, site), progress);
  assert.deepEqual(log.cache.map((c) => c.name), ["w_b", "w_a", "w_c"]);
  assert.deepEqual(log.params, ["w_a", "w_c", "w_b"]);
  assert.deepEqual(log.cache[1].bytes, [9, 9, 9, 9]);
  assert.equal(log.initWebGPU, 1);
  assert.equal(log.shaders, 1);
  assert.equal(log.scopes, 0);
  assert.deepEqual(model.fn, { fn: "clip" });
  assert.equal(progress.doneBytes, Object.values(site).reduce((s, b) => s + b.length, 0));
  assert.ok(stages.some((s) => /compiling GPU shaders/.test(s)));
});

test("a tensor-cache record outside its shard is refused before upload", async () => {
  const cache = { records: [{ dataPath: "params_shard_0.bin", nbytes: 4, records: [
    { name: "w", shape: [2], dtype: "float32", format: "raw", nbytes: 8, byteOffset: 0 }] }] };
  const site = {
    "vae.wasm": Uint8Array.of(0),
    "params/vae/tensor-cache.json": new TextEncoder().encode(JSON.stringify(cache)),
    "params/vae/params_shard_0.bin": new Uint8Array(4),
  };
  const manifest = {
    files: filesOf(site), submodels: { vae: { wasm: "vae.wasm", params: "params/vae/", function: "vae" } },
  };
  const loading = TvmSubmodel.load(fakeTvmjs().tvmjs, {}, "vae", manifest, filesFrom(manifest, site), new Progress(1));
  await assert.rejects(loading, /outside params_shard_0\.bin/);
});

test("filesToFetch lists the tokenizer, the wasm files and every weight file", () => {
  const manifest = {
    tokenizer: { vocab: "tokenizer/vocab.json", merges: "tokenizer/merges.txt" },
    submodels: Object.fromEntries(["clip", "unet", "vae"].map((s) => [s, { wasm: `${s}.wasm`,
      params: `params/${s}/` }])),
    files: { "tokenizer/vocab.json": {}, "params/unet/params_shard_0.bin": {}, "params/unet/tensor-cache.json": {},
      "params/clip/tensor-cache.json": {} },
  };
  assert.deepEqual(filesToFetch(manifest).sort(), ["clip.wasm", "params/clip/tensor-cache.json",
    "params/unet/params_shard_0.bin", "params/unet/tensor-cache.json", "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json", "unet.wasm", "vae.wasm"]);
});

test("param_names that do not match the records are refused", async () => {
  const cache = { metadata: { param_names: ["w", "gone"] }, records: [{ dataPath: "params_shard_0.bin", nbytes: 4,
    records: [{ name: "w", shape: [1], dtype: "float32", format: "raw", nbytes: 4, byteOffset: 0 }] }] };
  const site = {
    "vae.wasm": Uint8Array.of(0),
    "params/vae/tensor-cache.json": new TextEncoder().encode(JSON.stringify(cache)),
    "params/vae/params_shard_0.bin": new Uint8Array(4),
  };
  const manifest = { files: filesOf(site), submodels: { vae: { wasm: "vae.wasm", params: "params/vae", function: "vae" } } };
  const { tvmjs } = fakeTvmjs();
  await assert.rejects(TvmSubmodel.load(tvmjs, {}, "vae", manifest, filesFrom(manifest, site), new Progress(1)),
    /param_names does not match its records \(gone\)/);
});

test("a weight reaches the tensor cache through tvmjs of TVM >= 0.22 and of v0.21 (ndarrayCacheUpdate)", async () => {
  const { uploadRecord } = await import("../src/loader.js");
  const rec = { name: "w", shape: [2], dtype: "float32", format: "raw", byteOffset: 0, nbytes: 8 };
  const shard = new Uint8Array(new Float32Array([1, 2]).buffer);
  const fakeTvm = (updateName) => {
    const seen = [];
    const tvm = {
      beginScope() {}, endScope() {}, webgpu: () => "gpu",
      empty: () => ({ copyFromRawBytes(bytes) { this.bytes = bytes; } }),
      [updateName]: (name, arr, override) => seen.push([name, Array.from(arr.bytes), override]),
    };
    return { tvm, seen };
  };
  for (const name of ["tensorCacheUpdate", "ndarrayCacheUpdate"]) {
    const { tvm, seen } = fakeTvm(name);
    uploadRecord(tvm, rec, shard, "params_shard_0.bin");
    assert.deepEqual(seen, [["w", Array.from(shard), false]], name);
  }
});
