// Text to image, as diffusers' StableDiffusionPipeline does it: tokenize [negative, prompt] -> CLIP ->
// denoising loop (UNet with classifier-free guidance inside, JS scheduler) -> VAE -> RGBA pixels.
// The submodels are anything with `call(inputs) -> {data, shape}` (TvmSubmodel in the page, fakes in tests).

import { randn } from "./random.js";
import { createScheduler, DEFAULT_SCHEDULER } from "./schedulers/index.js";

export const DEFAULTS = { negativePrompt: "", steps: 20, guidance: 7.5, seed: 0, scheduler: DEFAULT_SCHEDULER,
  previewEvery: 0 };

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
    const s = manifest.latent_size;
    this.latentShape = [1, manifest.latent_channels, s, s];
    this.latentCount = this.latentShape.reduce((a, b) => a * b, 1);
  }

  /** The initial latents (before init_noise_sigma): given ones, or torch-compatible seeded noise. */
  initialLatents(seed, latents) {
    if (latents) {
      if (latents.length !== this.latentCount) {
        throw new Error(`initial latents have ${latents.length} values, the model needs ${this.latentCount} ` +
          `(shape ${this.latentShape.join("x")})`);
      }
      return Float32Array.from(latents);
    }
    return randn(BigInt(seed), this.latentCount);
  }

  async encodeText(prompt, negativePrompt) {
    const n = this.manifest.max_length;
    const ids = new Int32Array(2 * n);
    ids.set(this.tokenizer.encode(negativePrompt), 0); // row 0: unconditional
    ids.set(this.tokenizer.encode(prompt), n);
    const out = await this.models.clip.call([{ data: ids, shape: [2, n], dtype: "int32" }]);
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
   * @returns {Promise<{width: number, height: number, pixels: Float32Array, rgba: Uint8ClampedArray}>}
   */
  async generate(opts, onStep = () => {}) {
    const o = { ...DEFAULTS, ...opts };
    if (typeof o.prompt !== "string") throw new Error("generate needs a prompt string");
    const scheduler = createScheduler(o.scheduler, this.manifest.scheduler);
    scheduler.setTimesteps(o.steps);

    const emb = await this.encodeText(o.prompt, o.negativePrompt);
    let latents = this.initialLatents(o.seed, o.latents);
    const sigma0 = scheduler.initNoiseSigma;
    if (sigma0 !== 1) latents = latents.map((x) => Math.fround(x * sigma0));

    const guidance = Float32Array.of(o.guidance);
    const timesteps = scheduler.timesteps;
    for (let i = 0; i < timesteps.length; i++) {
      const t = timesteps[i];
      const input = scheduler.scaleModelInput(latents, t);
      const noise = await this.models.unet.call([
        { data: input, shape: this.latentShape, dtype: "float32" },
        { data: Float32Array.of(t), shape: [1], dtype: "float32" },
        { data: emb.data, shape: emb.shape, dtype: "float32" },
        { data: guidance, shape: [1], dtype: "float32" },
      ]);
      latents = scheduler.step(noise.data, t, latents);
      const info = { step: i + 1, steps: timesteps.length, timestep: t };
      if (o.previewEvery > 0 && (i + 1) % o.previewEvery === 0 && i + 1 < timesteps.length) {
        info.preview = await this.decode(latents);
      }
      onStep(info);
    }
    return this.decode(latents);
  }
}
