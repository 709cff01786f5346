// The compiled variants of a site (manifest.variants): extra .wasm files of some submodels, sharing the default
// build's weights, whose kernels use GPU features a stock browser may not offer (subgroup matrices), each with an
// optional {kernel name: WGSL} file that replaces shaders in its module (launch.js installKernelOverrides). Listed
// fastest first; the default build (submodels[*].wasm) is the last resort and is not listed. Which one runs is
// decided from the adapter before the device is requested, since the device must be asked for the features.
// Small and free of the runtime, like sizes.js.

import { PageError } from "./gpu.js";
import { sizeNames } from "./sizes.js";

export const DEFAULT_VARIANT = "default";
const SUBMODELS = ["clip", "unet", "vae"];

// where an adapter hides a feature the user can turn on
const HINTS = [[/^chromium-experimental-/, "an experimental feature: Chrome offers it with --enable-unsafe-webgpu, " +
  "Dawn with the allow_unsafe_apis toggle (the runner's --dawn-feature allow_unsafe_apis)"]];
const withHint = (feature) => {
  const hint = HINTS.find(([re]) => re.test(feature));
  return hint ? `${feature} (${hint[1]})` : feature;
};
const CONFIG_FIELDS = ["componentType", "resultComponentType", "M", "N", "K"];
const showConfig = (c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`;

/** The site's variants, checked: [{name, requires, submodels}], fastest first (none: []). */
export function variantsOf(manifest) {
  const variants = manifest.variants ?? [];
  variants.forEach((v, i) => {
    const subs = Object.keys(v?.submodels ?? {});
    const bad = !v?.name || v.name === DEFAULT_VARIANT || v.name === "auto" ? "has no name of its own"
      : subs.filter((s) => !SUBMODELS.includes(s) || !v.submodels[s]?.wasm)
        .map((s) => `lists "${s}", which is not a submodel or has no .wasm`)[0];
    if (bad) throw new PageError(`manifest.json variants[${i}] ${bad}: rebuild the site.`);
  });
  return variants;
}

/** The names a `variant` option accepts: the site's variants, fastest first, then "default". */
export function variantNames(manifest) {
  return [...variantsOf(manifest).map((v) => v.name), DEFAULT_VARIANT];
}

/**
 * What this adapter lacks for a variant's `requires`, as phrases (empty: it can run it).
 * @param {{features: Set<string>, info?: {subgroupMatrixConfigs?: object[]}}} adapter a GPUAdapter (or that shape)
 */
export function variantProblems(adapter, requires = {}) {
  const problems = (requires.features ?? []).filter((f) => !adapter.features.has(f)).map(withHint);
  const offered = [...(adapter.info?.subgroupMatrixConfigs ?? [])];  // Dawn's objects: compare field by field
  for (const need of requires.subgroup_matrix_configs ?? []) {
    if (!offered.some((c) => CONFIG_FIELDS.every((f) => c[f] === need[f]))) {
      problems.push(`${showConfig(need)} subgroup matrices`);
    }
  }
  // the kernels run one subgroup per workgroup of this many invocations: a larger subgroup would run partly
  // empty, which subgroup matrices do not allow (a smaller one is correct, with work done twice)
  const size = requires.subgroup_size;
  const most = adapter.info?.subgroupMaxSize;
  if (size !== undefined && !(most > 0 && most <= size)) {
    problems.push(`subgroups of at most ${size} invocations (it has ${most ? `up to ${most}` : "no subgroup sizes"})`);
  }
  const known = ["features", "subgroup_matrix_configs", "subgroup_size"];
  for (const key of Object.keys(requires).filter((k) => !known.includes(k))) {
    problems.push(`"${key}" (a requirement this page cannot check: update the page)`);
  }
  return problems;
}

/** The sized manifest (sizes.js manifestAtSize) is at the site's default size: the only one variants are built at. */
function atDefaultSize(manifest) {
  return !manifest.size || manifest.size === sizeNames(manifest)[0];
}

/**
 * The manifest as a variant sees it: that variant's .wasm (and kernels file) for the submodels it lists, the
 * default files for the others, `variant` set to its name. "default", or a size other than the default: unchanged.
 */
export function manifestWithVariant(manifest, name) {
  const variant = variantsOf(manifest).find((v) => v.name === name);
  if (!variant || !atDefaultSize(manifest)) return manifest;
  const submodels = Object.fromEntries(Object.entries(manifest.submodels).map(([sub, entry]) => {
    const own = variant.submodels[sub];
    if (!own) return [sub, entry];
    const { kernels, ...rest } = entry;  // the default build's kernels file is never the variant's
    return [sub, { ...rest, wasm: own.wasm, ...(own.kernels ? { kernels: own.kernels } : {}) }];
  }));
  return { ...manifest, submodels, variant: name };
}

const listed = (xs) => (xs.length < 2 ? xs.join("") : `${xs.slice(0, -1).join(", ")} and ${xs.at(-1)}`);

/**
 * Which of the site's builds runs on this adapter.
 * @param {object} manifest the manifest at the size to load (sizes.js manifestAtSize; the site's own is its default)
 * @param {GPUAdapter} adapter
 * @param {string} [want] "auto" (the fastest this adapter runs), "default", or a variant's name
 * @returns {{name: string, manifest: object, features: string[], reason: string}} manifest: as that variant sees
 *   it (manifestWithVariant); features: what the device must be asked for; reason: one sentence for the user
 */
export function pickVariant(manifest, adapter, want = "auto") {
  const variants = variantsOf(manifest);
  const names = variantNames(manifest);
  const result = (variant, reason) => ({ name: variant?.name ?? DEFAULT_VARIANT, reason,
    manifest: variant ? manifestWithVariant(manifest, variant.name) : manifest,
    features: variant?.requires?.features ?? [] });
  if (want !== "auto" && !names.includes(want)) {
    throw new PageError(`variant=${want}: this site has ${names.join(", ")} (or auto).`);
  }
  if (want === DEFAULT_VARIANT) return result(null, "asked for (variant=default)");
  if (!variants.length) return result(null, "this site has no other build");
  if (!atDefaultSize(manifest)) {
    const sized = `the site's variants are built for its default size ${sizeNames(manifest)[0]}, not ${manifest.size}`;
    if (want !== "auto") throw new PageError(`variant=${want}: ${sized}; load that size or variant=default.`);
    return result(null, sized);
  }
  if (want !== "auto") {
    const variant = variants.find((v) => v.name === want);
    const problems = variantProblems(adapter, variant.requires);
    if (problems.length) {
      throw new PageError(`variant=${want}: this GPU adapter does not offer ${listed(problems)}; use variant=auto ` +
        "or variant=default.");
    }
    return result(variant, `asked for (variant=${want})`);
  }
  const skipped = [];
  for (const variant of variants) {
    const problems = variantProblems(adapter, variant.requires);
    if (!problems.length) {
      const needs = [...(variant.requires?.features ?? []),
        ...(variant.requires?.subgroup_matrix_configs ?? []).map((c) => `${showConfig(c)} subgroup matrices`)];
      const why = needs.length ? `this GPU adapter offers ${listed(needs)}` : "it needs nothing this GPU lacks";
      return result(variant, `${why}${skipped.length ? `; skipped ${skipped.join("; ")}` : ""}`);
    }
    skipped.push(`${variant.name}: this GPU adapter does not offer ${listed(problems)}`);
  }
  // one variant: its lack says it all; more: each is named
  return result(null, variants.length === 1 ? skipped[0].slice(skipped[0].indexOf(": ") + 2) : skipped.join("; "));
}
