// Text to image, as diffusers' StableDiffusionPipeline does it: tokenize [negative, prompt] -> CLIP ->
// denoising loop (UNet with classifier-free guidance inside, JS scheduler) -> VAE -> RGBA pixels.
// A model built without classifier-free guidance (manifest.classifier_free false: SD-Turbo) tokenizes the prompt
// alone and runs its batch-1 UNet once per step with no guidance input, as diffusers does with guidance_scale <= 1.
// The submodels are anything with `call(inputs) -> {data, shape}` (TvmSubmodel in the page, fakes in tests).

import { MersenneTwister, randnFrom } from "./random.js";
import { createScheduler, DEFAULT_SCHEDULER } from "./schedulers/index.js";

export const DEFAULTS = { negativePrompt: "", steps: 20, guidance: 7.5, seed: 0, scheduler: DEFAULT_SCHEDULER,
  previewEvery: 0 };

/** The generation defaults of a model: DEFAULTS with the manifest's own steps, guidance and scheduler. */
export function modelDefaults(manifest) {
  const own = manifest?.defaults ?? {};
  const pick = Object.fromEntries(["steps", "guidance", "scheduler"].filter((k) => own[k] !== undefined)
    .map((k) => [k, own[k]]));
  return { ...DEFAULTS, ...pick };
}

/** RGB floats (0..255, HWC) to canvas RGBA bytes. */
export function rgbToRgba(rgb, width, height) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let p = 0; p < width * height; p++) {
    rgba[4 * p] = rgb[3 * p];
    rgba[4 * p + 1] = rgb[3 * p + 1];
    rgba[4 * p + 2] = rgb[3 * p + 2];
    rgba[4 * p + 3] = 255;
  }
  return rgba;
}

/** Thrown by generate() when its signal is aborted: the generation stopped, nothing is wrong. */
export class Cancelled extends Error {
  constructor() {
    super("generation cancelled");
    this.name = "Cancelled";
  }
}

export class StableDiffusion {
  /**
   * @param {object} manifest model/manifest.json
   * @param {{encode(text: string): Int32Array}} tokenizer
   * @param {{clip: object, unet: object, vae: object}} models
   */
  constructor(manifest, tokenizer, models) {
    this.manifest = manifest;
    this.tokenizer = tokenizer;
    this.models = models;
    this.latentShape = [1, manifest.latent_channels, manifest.latent_height, manifest.latent_width];
    this.latentCount = this.latentShape.reduce((a, b) => a * b, 1);
    // false: clip and unet were built at batch 1 (the prompt alone) and the unet takes no guidance scale
    this.classifierFree = manifest.classifier_free !== false;
    // true: a batch-1 unet that takes the guidance scale as an embedding (LCM)
    this.guidanceEmbedding = manifest.guidance_embedding === true;
  }

  /**
   * The initial latents (before init_noise_sigma): given ones, or torch-compatible seeded noise drawn from `rng`
   * (a generator seeded with `seed`; it goes on to give an ancestral scheduler its per-step noise).
   */
  initialLatents(seed, latents, rng = new MersenneTwister(BigInt(seed))) {
    if (latents) {
      if (latents.length !== this.latentCount) {
        throw new Error(`initial latents have ${latents.length} values, the model needs ${this.latentCount} ` +
          `(shape ${this.latentShape.join("x")})`);
      }
      return Float32Array.from(latents);
    }
    return randnFrom(rng, this.latentCount);
  }

  async encodeText(prompt, negativePrompt) {
    const n = this.manifest.max_length;
    const rows = this.classifierFree ? [negativePrompt, prompt] : [prompt]; // row 0 of two: unconditional
    const ids = new Int32Array(rows.length * n);
    rows.forEach((text, row) => ids.set(this.tokenizer.encode(text), row * n));
    const out = await this.models.clip.call([{ data: ids, shape: [rows.length, n], dtype: "int32" }]);
    return out;
  }

  async decode(latents) {
    const out = await this.models.vae.call([{ data: latents, shape: this.latentShape, dtype: "float32" }]);
    const [, height, width, channels] = out.shape;
    if (channels !== 3) throw new Error(`vae returned shape [${out.shape}], expected [1, H, W, 3]`);
    for (const v of out.data) {
      if (Number.isNaN(v)) throw new Error("the VAE produced NaN values: the model or its weights are broken");
    }
    return { width, height, pixels: out.data, rgba: rgbToRgba(out.data, width, height) };
  }

  /**
   * Generate one image.
   * @param {object} opts prompt, negativePrompt, steps, guidance, seed, scheduler, latents (Float32Array of
   *   the initial noise, replaces the seed), previewEvery (decode every k steps; 0: never)
   * @param {(info: {step: number, steps: number, timestep: number, preview?: object}) => void} onStep
   * @param {AbortSignal} [signal] checked before each submodel call: an abort stops the generation within one
   *   step (the call under way finishes) with a Cancelled error
   * @returns {Promise<{width: number, height: number, pixels: Float32Array, rgba: Uint8ClampedArray}>}
   */
  async generate(opts, onStep = () => {}, signal = undefined) {
    const stopIfCancelled = () => {
      if (signal?.aborted) throw new Cancelled();
    };
    const o = { ...modelDefaults(this.manifest), ...opts };
    if (typeof o.prompt !== "string") throw new Error("generate needs a prompt string");
    const scheduler = createScheduler(o.scheduler, this.manifest.scheduler);
    scheduler.setTimesteps(o.steps);

    stopIfCancelled();
    const emb = await this.encodeText(o.prompt, o.negativePrompt);
    // one torch-compatible generator, as diffusers' pipeline given generator=manual_seed(seed): the initial
    // latents (unless given), then an ancestral scheduler's noise step after step
    const rng = new MersenneTwister(BigInt(o.seed));
    let latents = this.initialLatents(o.seed, o.latents, rng);
    if ("noise" in scheduler) scheduler.noise = (n) => randnFrom(rng, n);
    const sigma0 = scheduler.initNoiseSigma;
    if (sigma0 !== 1) latents = latents.map((x) => Math.fround(x * sigma0));

    // guidance <= 1 is no guidance (diffusers then runs the prompt alone): 1 makes u + 1 * (c - u) the prompt's
    const guidance = Float32Array.of(this.guidanceEmbedding ? o.guidance : Math.max(o.guidance, 1));
    const timesteps = scheduler.timesteps;
    for (let i = 0; i < timesteps.length; i++) {
      const t = timesteps[i];
      stopIfCancelled();
      const input = scheduler.scaleModelInput(latents, t);
      const noise = await this.models.unet.call([
        { data: input, shape: this.latentShape, dtype: "float32" },
        { data: Float32Array.of(t), shape: [1], dtype: "float32" },
        { data: emb.data, shape: emb.shape, dtype: "float32" },
        ...(this.classifierFree || this.guidanceEmbedding ? [{ data: guidance, shape: [1], dtype: "float32" }] : []),
      ]);
      latents = scheduler.step(noise.data, t, latents);
      const info = { step: i + 1, steps: timesteps.length, timestep: t };
      if (o.previewEvery > 0 && (i + 1) % o.previewEvery === 0 && i + 1 < timesteps.length) {
        info.preview = await this.decode(latents);
      }
      onStep(info);
    }
    stopIfCancelled();
    return this.decode(latents);
  }
}
