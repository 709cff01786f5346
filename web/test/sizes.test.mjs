// Several sizes in one site: picking a size from the manifest, and a switch that loads that size's .wasm of the
// image-sized submodels and takes their weights from the weight cache (no shard fetched again).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { PageError } from "../src/gpu.js";
import { manifestAtSize, sizeNames, submodelsToSwitch } from "../src/sizes.js";
import { ModelFiles } from "../src/weight_cache.js";
import { launchSettings } from "../src/launch.js";
import { manifestWithVariant } from "../src/variants.js";
import { WebsdModel } from "../src/websd.js";

const BASE = new URL("http://127.0.0.1:8000/model/manifest.json");
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");
const SUBS = ["clip", "unet", "vae"];

/** A two-size site as pipeline/page/manifest.py writes it: 64x64 (default) and 64x48, one set of weights. */
function twoSizeSite() {
  const cacheJson = (name) => new TextEncoder().encode(JSON.stringify({ metadata: { param_names: [`${name}.w`] },
    records: [{ dataPath: "params_shard_0.bin", format: "raw-shard", nbytes: 4, records: [
      { name: `${name}.w`, shape: [1], dtype: "float32", format: "raw", nbytes: 4, byteOffset: 0 }] }] }));
  const site = {};
  for (const [i, sub] of SUBS.entries()) {
    site[`${sub}.wasm`] = Uint8Array.of(0, 97, 115, 109, i);
    site[`params/${sub}/tensor-cache.json`] = cacheJson(sub);
    site[`params/${sub}/params_shard_0.bin`] = Uint8Array.of(0, 0, 128, 63 - i);
  }
  site["sizes/64x48/unet.wasm"] = Uint8Array.of(0, 97, 115, 109, 11);
  site["sizes/64x48/vae.wasm"] = Uint8Array.of(0, 97, 115, 109, 12);
  const files = Object.fromEntries(Object.entries(site).map(([p, b]) => [p, { sha256: sha256(b), bytes: b.length }]));
  const wasm = (size) => Object.fromEntries(SUBS.map((s) => [s, size && s !== "clip" ? `sizes/${size}/${s}.wasm`
    : `${s}.wasm`]));
  const manifest = {
    width: 64, height: 64, latent_width: 8, latent_height: 8, latent_channels: 4, max_length: 77, vae_tile: null,
    submodels: Object.fromEntries(SUBS.map((s) => [s, { wasm: `${s}.wasm`, params: `params/${s}/`, function: s }])),
    default_size: "64x64",
    sizes: [
      { name: "64x64", width: 64, height: 64, latent_width: 8, latent_height: 8, vae_tile: null, wasm: wasm(null) },
      { name: "64x48", width: 64, height: 48, latent_width: 8, latent_height: 6, vae_tile: 32, wasm: wasm("64x48") },
    ],
    files,
  };
  return { site, manifest };
}

test("sizeNames lists the manifest's sizes, default first; a site without sizes has its one", () => {
  const { manifest } = twoSizeSite();
  assert.deepEqual(sizeNames(manifest), ["64x64", "64x48"]);
  const { sizes, ...old } = manifest;
  assert.deepEqual(sizeNames(old), ["64x64"]);
});

test("manifestAtSize gives that size's dimensions, tile and .wasm files, and the same weights", () => {
  const { manifest } = twoSizeSite();
  const wide = manifestAtSize(manifest, "64x48");
  assert.deepEqual([wide.width, wide.height, wide.latent_width, wide.latent_height, wide.vae_tile, wide.size],
    [64, 48, 8, 6, 32, "64x48"]);
  assert.deepEqual(Object.values(wide.submodels).map((s) => s.wasm), ["clip.wasm", "sizes/64x48/unet.wasm",
    "sizes/64x48/vae.wasm"]);
  assert.deepEqual(Object.values(wide.submodels).map((s) => s.params), SUBS.map((s) => `params/${s}/`));
  assert.equal(manifestAtSize(manifest).size, "64x64");
  assert.deepEqual(submodelsToSwitch(manifestAtSize(manifest), wide), ["unet", "vae"]);
  assert.deepEqual(submodelsToSwitch(wide, wide), []);
});

test("a size the site does not have is a PageError naming the ones it has", () => {
  const { manifest } = twoSizeSite();
  assert.throws(() => manifestAtSize(manifest, "512x512"),
    (e) => e instanceof PageError && /512x512: this site has 64x64, 64x48/.test(e.message));
  const { sizes, ...old } = manifest;
  assert.throws(() => manifestAtSize(old, "64x48"), /has 64x64 \(build more into it with model.sizes\)/);
  assert.equal(manifestAtSize(old, "64x64"), old);
});

test("switching size loads the new size's unet and vae with their weights from the cache: no shard fetched", async () => {
  const { site, manifest } = twoSizeSite();
  const fetched = [];
  const fetch = async (url) => {
    const path = new URL(url).href.slice(new URL(".", BASE).href.length);
    fetched.push(path);
    return new Response(site[path], { status: 200 });
  };
  const store = new Map();
  const cache = { get: async (k) => store.get(k) ?? null, put: async (k, b) => { store.set(k, b); },
    delete: async (k) => { store.delete(k); } };
  for (const [path, bytes] of Object.entries(site)) {  // what the first load stored: every default-size file
    if (!path.startsWith("sizes/")) store.set(manifest.files[path].sha256, bytes);
  }
  const instances = [];
  const tvmjs = {
    createPolyfillWASI: () => ({}),
    instantiate: async (wasm) => {
      const uploaded = [];
      const tvm = {
        wasm: new Uint8Array(wasm).at(-1), uploaded, initWebGPU() {}, systemLib: () => ({}),
        asyncLoadWebGPUPipelines: async () => {}, webgpu: () => ({ sync: async () => {} }), cpu: () => ({}),
        empty: () => ({ copyFromRawBytes() {} }), tensorCacheUpdate: (name) => uploaded.push(name),
        beginScope() {}, endScope() {}, detachFromCurrentScope: (x) => x,
        createVirtualMachine: () => ({ getFunction: (name) => ({ fn: name }) }),
        getParamsFromCacheByName: (names) => ({ names }),
      };
      instances.push(tvm);
      return tvm;
    },
  };
  const disposed = [];
  const models = Object.fromEntries(SUBS.map((s) => [s, {
    tvm: { dispose: () => disposed.push(`${s}.tvm`), tensorCacheClear: () => disposed.push(`${s}.cache`) },
    params: { dispose: () => disposed.push(`${s}.params`) } }]));
  const device = { pushErrorScope() {}, popErrorScope: async () => null };
  const model = new WebsdModel({ manifest, sized: manifestAtSize(manifest), device, models, tvmjs,
    files: new ModelFiles(BASE, manifest.files, { fetch, cache }), onProgress: () => {} });
  assert.equal(model.size, "64x64");
  const old = { ...models };

  await model.setSize("64x48");
  assert.deepEqual(fetched.sort(), ["sizes/64x48/unet.wasm", "sizes/64x48/vae.wasm"]);
  // the old size's weights are freed, not its Instance: that would destroy the device the others share
  assert.deepEqual(disposed.sort(), ["unet.cache", "unet.params", "vae.cache", "vae.params"]);
  assert.equal(old.unet.tvm.deviceLostIsError, false);
  assert.equal(model.models.clip, old.clip);
  assert.deepEqual([model.models.unet.tvm.wasm, model.models.vae.tvm.wasm], [11, 12]);
  assert.deepEqual(instances.map((t) => t.uploaded).flat().sort(), ["unet.w", "vae.w"]);
  assert.equal(model.size, "64x48");
  assert.deepEqual(model.pipeline.latentShape, [1, 4, 6, 8]);

  fetched.length = 0;
  await model.setSize("64x48");  // already there: nothing loads
  await model.setSize("64x64");  // back: the default .wasm files and weights are all in the cache
  assert.deepEqual(fetched, []);
  assert.equal(model.size, "64x64");
});

test("a variant runs at the default size only: a switch away loads the default build and says so; back, the variant",
  async () => {
    const { site, manifest } = twoSizeSite();
    site["variants/sm/unet.wasm"] = Uint8Array.of(0, 97, 115, 109, 21);
    site["variants/sm/unet.kernels.json"] = new TextEncoder().encode(JSON.stringify({ scale: "// the variant's" }));
    for (const p of ["variants/sm/unet.wasm", "variants/sm/unet.kernels.json"]) {
      manifest.files[p] = { sha256: sha256(site[p]), bytes: site[p].length };
    }
    manifest.variants = [{ name: "sm", requires: {}, submodels: { unet: { wasm: "variants/sm/unet.wasm",
      kernels: "variants/sm/unet.kernels.json" } } }];
    const fetch = async (url) => new Response(site[new URL(url).href.slice(new URL(".", BASE).href.length)]);
    const shaders = [];  // [wasm id, WGSL] of every shader the instances create
    const tvmjs = {
      createPolyfillWASI: () => ({}),
      instantiate: async (wasm) => {
        const id = new Uint8Array(wasm).at(-1);
        const ctx = { createShader: () => {}, createShaderAsync: async (finfo, code) => shaders.push([id, code]) };
        return { wasm: id, lib: { webGPUContext: ctx }, initWebGPU() {}, systemLib: () => ({}),
          asyncLoadWebGPUPipelines: () => ctx.createShaderAsync({ name: "scale" }, "// the module's"),
          webgpu: () => ({ sync: async () => {} }), cpu: () => ({}), empty: () => ({ copyFromRawBytes() {} }),
          tensorCacheUpdate() {}, beginScope() {}, endScope() {}, detachFromCurrentScope: (x) => x,
          createVirtualMachine: () => ({ getFunction: () => ({}) }), getParamsFromCacheByName: () => ({}) };
      },
    };
    const sized = manifestWithVariant(manifestAtSize(manifest), "sm");
    const models = Object.fromEntries(SUBS.map((s) => [s, { tvm: { wasm: s === "unet" ? 21 : null } }]));
    const model = new WebsdModel({ manifest, sized, picked: { name: "sm", reason: "it runs" }, models, tvmjs,
      device: { pushErrorScope() {}, popErrorScope: async () => null }, onProgress: () => {},
      files: new ModelFiles(BASE, manifest.files, { fetch }) });
    assert.deepEqual(model.variant, { name: "sm", reason: "it runs" });
    launchSettings.mode = "plain";  // tvmjs' own launch: this stand-in has a createShader(Async) and nothing else
    try {
      await model.setSize("64x48");
      assert.deepEqual(model.variant, { name: "default",
        reason: "sm is built for the site's default size only, not 64x48" });
      assert.deepEqual([model.models.unet.tvm.wasm, model.models.unet.kernelOverrides], [11, null]);
      await model.setSize("64x64");  // the variant's unet again, its kernel in place of the module's
    } finally {
      launchSettings.mode = "replay";
    }
    assert.deepEqual(model.variant, { name: "sm", reason: "it runs" });
    assert.deepEqual([model.models.unet.tvm.wasm, model.models.unet.kernelOverrides],
      [21, { kernels: 1, applied: 1, unused: [] }]);
    assert.deepEqual(shaders.filter(([id]) => id === 21), [[21, "// the variant's"]]);
    assert.deepEqual(shaders.filter(([id]) => id !== 21).map(([, code]) => code), ["// the module's",
      "// the module's", "// the module's"]);  // 64x48's unet and vae, and 64x64's vae
  });
