// Compiled variants (src/variants.js): which build an adapter runs, why, and the manifest as that build sees it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PageError } from "../src/gpu.js";
import { submodelFiles } from "../src/loader.js";
import { manifestAtSize, submodelsToSwitch } from "../src/sizes.js";
import { manifestWithVariant, pickVariant, variantNames } from "../src/variants.js";

const SUBS = ["clip", "unet", "vae"];
const SM = "chromium-experimental-subgroup-matrix";
const F16_F32 = { componentType: "f16", resultComponentType: "f32", M: 8, N: 8, K: 8 };

/** A site with a subgroup-matrix variant of the unet (manifest contract of issue 20), optionally two sizes. */
function site({ sizes = false, more = [] } = {}) {
  const manifest = {
    width: 64, height: 64, latent_width: 8, latent_height: 8,
    submodels: Object.fromEntries(SUBS.map((s) => [s, { wasm: `${s}.wasm`, params: `params/${s}/`, function: s }])),
    variants: [...more, { name: "subgroup-matrix", requires: { features: [SM, "shader-f16"],
      subgroup_matrix_configs: [F16_F32] },
    submodels: { unet: { wasm: "variants/subgroup-matrix/unet.wasm",
      kernels: "variants/subgroup-matrix/unet.kernels.json" } } }],
    files: Object.fromEntries(["clip.wasm", "unet.wasm", "vae.wasm", "params/unet/params_shard_0.bin",
      "variants/subgroup-matrix/unet.wasm", "variants/subgroup-matrix/unet.kernels.json"]
      .map((p) => [p, { sha256: "0".repeat(64), bytes: 1 }])),
  };
  if (sizes) {
    manifest.sizes = [{ name: "64x64", width: 64, height: 64, latent_width: 8, latent_height: 8, wasm: {} },
      { name: "64x48", width: 64, height: 48, latent_width: 8, latent_height: 6,
        wasm: { unet: "sizes/64x48/unet.wasm", vae: "sizes/64x48/vae.wasm" } }];
  }
  return manifest;
}

/** A GPUAdapter's shape: Dawn's subgroup matrix configs are objects whose fields are getters on the prototype. */
class Config {
  #c;
  constructor(c) { this.#c = c; }
  get componentType() { return this.#c.componentType; }
  get resultComponentType() { return this.#c.resultComponentType; }
  get M() { return this.#c.M; }
  get N() { return this.#c.N; }
  get K() { return this.#c.K; }
}
const adapter = (features, configs = []) => ({ features: new Set(features),
  info: { subgroupMatrixConfigs: configs.map((c) => new Config(c)) } });
const STOCK = adapter(["shader-f16", "subgroups"]);
const LAVAPIPE_SM = adapter([SM, "shader-f16", "subgroups"], [{ ...F16_F32, resultComponentType: "f16" }, F16_F32]);

test("without the feature the default build runs, and the reason names the missing feature and how to get it", () => {
  const manifest = site();
  const pick = pickVariant(manifest, STOCK);
  assert.equal(pick.name, "default");
  assert.deepEqual(pick.features, []);
  assert.equal(pick.manifest, manifest);  // the site's own manifest: the default .wasm files, no kernels
  assert.match(pick.reason, /^this GPU adapter does not offer chromium-experimental-subgroup-matrix \(/);
  assert.match(pick.reason, /--enable-unsafe-webgpu/);
  assert.match(pick.reason, /allow_unsafe_apis/);
});

test("the feature without the variant's subgroup matrix config: default, naming the config", () => {
  const noConfig = adapter([SM, "shader-f16"], [{ ...F16_F32, resultComponentType: "f16" }]);
  const pick = pickVariant(site(), noConfig);
  assert.equal(pick.name, "default");
  assert.equal(pick.reason, "this GPU adapter does not offer f16->f32 8x8x8 subgroup matrices");
  // a config must match field by field: the same types at another shape are not it
  assert.equal(pickVariant(site(), adapter([SM, "shader-f16"], [{ ...F16_F32, K: 16 }])).name, "default");
});

test("an adapter that offers everything runs the variant and asks the device for its features", () => {
  const pick = pickVariant(site(), LAVAPIPE_SM);
  assert.equal(pick.name, "subgroup-matrix");
  assert.deepEqual(pick.features, [SM, "shader-f16"]);
  assert.equal(pick.reason, `this GPU adapter offers ${SM}, shader-f16 and f16->f32 8x8x8 subgroup matrices`);
});

test("the variant's manifest: its unet .wasm and kernels, the other submodels and the weights untouched", () => {
  const { manifest } = pickVariant(site(), LAVAPIPE_SM);
  assert.equal(manifest.variant, "subgroup-matrix");
  assert.deepEqual(manifest.submodels.unet, { wasm: "variants/subgroup-matrix/unet.wasm",
    kernels: "variants/subgroup-matrix/unet.kernels.json", params: "params/unet/", function: "unet" });
  assert.deepEqual(manifest.submodels.clip, site().submodels.clip);
  assert.deepEqual(manifest.submodels.vae, site().submodels.vae);
  // what the loader fetches for the unet: the variant's two files and the shared weights
  assert.deepEqual(submodelFiles(manifest, "unet"), ["variants/subgroup-matrix/unet.wasm",
    "variants/subgroup-matrix/unet.kernels.json", "params/unet/params_shard_0.bin"]);
  assert.deepEqual(submodelsToSwitch(site(), manifest), ["unet"]);
});

test("auto takes the fastest the adapter runs; each faster one skipped says what the adapter lacks", () => {
  const wide = { name: "wide", requires: { features: ["chromium-experimental-wide"] },
    submodels: { vae: { wasm: "variants/wide/vae.wasm" } } };
  const pick = pickVariant(site({ more: [wide] }), LAVAPIPE_SM);
  assert.equal(pick.name, "subgroup-matrix");
  assert.match(pick.reason, /; skipped wide: this GPU adapter does not offer chromium-experimental-wide \(/);
  const none = pickVariant(site({ more: [wide] }), STOCK);
  assert.equal(none.name, "default");
  assert.match(none.reason, /^wide: this GPU adapter does not offer chromium-experimental-wide .*; subgroup-matrix: /);
  assert.deepEqual(variantNames(site({ more: [wide] })), ["wide", "subgroup-matrix", "default"]);
});

test("forcing: default always runs; an unknown name or one the adapter cannot run is a PageError", () => {
  const forced = pickVariant(site(), LAVAPIPE_SM, "default");
  assert.deepEqual([forced.name, forced.reason], ["default", "asked for (variant=default)"]);
  assert.equal(pickVariant(site(), LAVAPIPE_SM, "subgroup-matrix").reason, "asked for (variant=subgroup-matrix)");
  assert.throws(() => pickVariant(site(), LAVAPIPE_SM, "fast"),
    (e) => e instanceof PageError && e.message === "variant=fast: this site has subgroup-matrix, default (or auto).");
  assert.throws(() => pickVariant(site(), STOCK, "subgroup-matrix"),
    (e) => e instanceof PageError && /^variant=subgroup-matrix: this GPU adapter does not offer chromium-exp/.test(
      e.message) && /use variant=auto or variant=default\.$/.test(e.message));
});

test("at a size other than the default the default build runs and says so; the default size runs the variant", () => {
  const wide = manifestAtSize(site({ sizes: true }), "64x48");
  const pick = pickVariant(wide, LAVAPIPE_SM);
  assert.deepEqual([pick.name, pick.features], ["default", []]);
  assert.equal(pick.reason, "the site's variants are built for its default size 64x64, not 64x48");
  assert.equal(pick.manifest.submodels.unet.wasm, "sizes/64x48/unet.wasm");
  assert.throws(() => pickVariant(wide, LAVAPIPE_SM, "subgroup-matrix"), /load that size or variant=default/);
  assert.equal(pickVariant(manifestAtSize(site({ sizes: true })), LAVAPIPE_SM).name, "subgroup-matrix");
  assert.equal(manifestWithVariant(wide, "subgroup-matrix"), wide);
});

test("a site without variants runs its default build; a malformed variant is a one-line PageError", () => {
  const { variants, ...plain } = site();
  const pick = pickVariant(plain, LAVAPIPE_SM);
  assert.deepEqual([pick.name, pick.reason, pick.manifest], ["default", "this site has no other build", plain]);
  assert.deepEqual(variantNames(plain), ["default"]);
  assert.throws(() => pickVariant({ ...plain, variants: [{ name: "default", submodels: {} }] }, STOCK),
    /variants\[0\] has no name of its own: rebuild the site/);
  assert.throws(() => pickVariant({ ...plain, variants: [{ name: "x", submodels: { unet: {} } }] }, STOCK),
    /variants\[0\] lists "unet", which is not a submodel or has no \.wasm/);
  const unknown = { ...plain, variants: [{ name: "x", requires: { limits: {} }, submodels: {} }] };
  assert.match(pickVariant(unknown, LAVAPIPE_SM).reason, /"limits" \(a requirement this page cannot check/);
});

test("subgroup_size: the adapter's subgroups must fit the kernels' one-subgroup workgroups", () => {
  const manifest = site();
  manifest.variants[0].requires.subgroup_size = 8;
  const withSize = (most) => ({ ...LAVAPIPE_SM, info: { ...LAVAPIPE_SM.info, subgroupMaxSize: most } });
  assert.equal(pickVariant(manifest, withSize(8)).name, "subgroup-matrix");
  const nvidia = pickVariant(manifest, withSize(32));  // built for lavapipe's 8: a 32-wide subgroup would run empty
  assert.equal(nvidia.name, "default");
  assert.match(nvidia.reason, /subgroups of at most 8 invocations \(it has up to 32\)/);
  assert.equal(pickVariant(manifest, LAVAPIPE_SM).name, "default");  // no subgroup sizes known: not run
});
