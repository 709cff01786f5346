// The sizes of a site (manifest.sizes, built from model.sizes): each has its own .wasm of the submodels that see the
// image size (unet, vae) and shares the weights. Small and free of the runtime: the page's main thread reads it too.

import { PageError } from "./gpu.js";

/** The names of the sizes a site offers ("<width>x<height>"), the default first; one for a site without sizes. */
export function sizeNames(manifest) {
  return manifest.sizes?.map((s) => s.name) ?? [`${manifest.width}x${manifest.height}`];
}

/**
 * The manifest as one of its sizes sees it: that size's width, height, latent sizes, VAE tile and .wasm files, the
 * same weights (params). `name` undefined or null: the default size.
 */
export function manifestAtSize(manifest, name = null) {
  const names = sizeNames(manifest);
  const want = name ?? names[0];
  if (!names.includes(want)) {
    throw new PageError(`Size ${want}: this site has ${names.join(", ")}` +
      `${manifest.sizes ? "" : " (build more into it with model.sizes)"}.`);
  }
  const size = manifest.sizes?.find((s) => s.name === want);
  if (!size) return manifest;  // a site built before model.sizes: its one size
  const submodels = Object.fromEntries(Object.entries(manifest.submodels)
    .map(([sub, entry]) => [sub, { ...entry, wasm: size.wasm[sub] ?? entry.wasm }]));
  const { width, height, latent_width, latent_height, vae_tile } = size;
  return { ...manifest, width, height, latent_width, latent_height, vae_tile, submodels, size: size.name };
}

/** The submodels whose .wasm (or a variant's kernels file) differs between two views of a manifest (manifestAtSize,
 * variants.js manifestWithVariant): what a size switch loads. */
export function submodelsToSwitch(from, to) {
  return Object.keys(to.submodels).filter((sub) => from.submodels[sub]?.wasm !== to.submodels[sub].wasm ||
    from.submodels[sub]?.kernels !== to.submodels[sub].kernels);
}
