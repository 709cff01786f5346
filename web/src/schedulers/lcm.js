// The Latent Consistency Model sampler, a port of diffusers' LCMScheduler (multistep consistency sampling): each
// step predicts the clean latents, applies the consistency boundary scalings (c_skip, c_out) and, except after the
// last step, noises them again to the next timestep with fresh noise from `this.noise(n)` (a torch-compatible
// generator stream the pipeline sets, as for Euler ancestral). Timesteps are a subset of the distillation
// schedule (original_inference_steps, 50: t = 999, 979, ..., 19). Arithmetic in float32 in diffusers' order.

import { checkStepArgs, makeAlphasCumprod, makeBetas, requireSupported, resolveConfig } from "./common.js";

const f32 = Math.fround;

export const LCM_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  trained_betas: null,
  original_inference_steps: 50,
  clip_sample: false,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: "epsilon",
  thresholding: false,
  timestep_spacing: "leading",
  timestep_scaling: 10.0,
  rescale_betas_zero_snr: false,
};

const SIGMA_DATA = 0.5;

export class LCMScheduler {
  /** @param {object} config a diffusers scheduler config dict (unknown keys are ignored, like from_config) */
  constructor(config = {}) {
    this.config = resolveConfig(LCM_DEFAULTS, config);
    requireSupported(this.config, "LCMScheduler", {
      prediction_type: ["epsilon", "v_prediction", "sample"],
      thresholding: [false],
      rescale_betas_zero_snr: [false],
    });
    this.alphasCumprod = makeAlphasCumprod(makeBetas(this.config));
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.initNoiseSigma = 1;
    this.timesteps = [];
    /** @type {((n: number) => Float32Array) | null} the noise source between steps */
    this.noise = null;
  }

  setTimesteps(numInferenceSteps) {
    const c = this.config;
    const n = numInferenceSteps;
    if (!Number.isInteger(n) || n < 1) throw new Error(`number of steps must be a positive integer, got ${n}`);
    const original = c.original_inference_steps;
    const N = c.num_train_timesteps;
    if (original > N) throw new Error(`LCMScheduler: original_inference_steps ${original} > ${N} train steps`);
    if (n > original) {
      throw new Error(`LCMScheduler: ${n} steps is more than the ${original} steps it was distilled on`);
    }
    const k = Math.floor(N / original);
    const origin = Array.from({ length: original }, (_, i) => (i + 1) * k - 1).reverse();
    const stride = original / n; // numpy.linspace(0, original, n, endpoint=False), floored
    this.timesteps = Array.from({ length: n }, (_, i) => origin[Math.floor(i * stride)]);
    this.numInferenceSteps = n;
    this.stepIndex = null;
  }

  indexForTimestep(t) {
    const i = this.timesteps.indexOf(t);
    if (i < 0) throw new Error(`timestep ${t} is not in the schedule`);
    return i;
  }

  /** LCM does not scale the model input. */
  scaleModelInput(sample) {
    return sample;
  }

  step(modelOutput, t, sample) {
    if (this.numInferenceSteps === undefined) throw new Error("call setTimesteps(n) before step()");
    checkStepArgs("LCMScheduler", modelOutput, sample);
    if (this.stepIndex === null) this.stepIndex = this.indexForTimestep(t);
    const last = this.stepIndex === this.numInferenceSteps - 1;
    const prevT = last ? t : this.timesteps[this.stepIndex + 1];
    const a = this.alphasCumprod[t];
    const aPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const sqrtA = f32(Math.sqrt(a));
    const sqrtB = f32(Math.sqrt(f32(1 - a)));
    // the boundary condition scalings, float32 tensors in diffusers
    const scaled = f32(t * this.config.timestep_scaling);
    const denom = f32(f32(scaled * scaled) + SIGMA_DATA ** 2);
    const cSkip = f32(SIGMA_DATA ** 2 / denom);
    const cOut = f32(scaled / f32(Math.sqrt(denom)));
    const kind = this.config.prediction_type;
    const clip = this.config.clip_sample ? this.config.clip_sample_range : Infinity;
    if (!last && !this.noise) throw new Error("LCMScheduler.step needs a noise source (scheduler.noise)");
    const noise = last ? null : this.noise(sample.length);
    const sqrtAPrev = f32(Math.sqrt(aPrev));
    const sqrtBPrev = f32(Math.sqrt(f32(1 - aPrev)));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const x = sample[i];
      const m = modelOutput[i];
      let x0;
      if (kind === "epsilon") x0 = f32(f32(x - f32(sqrtB * m)) / sqrtA);
      else if (kind === "v_prediction") x0 = f32(f32(sqrtA * x) - f32(sqrtB * m));
      else x0 = m;
      x0 = Math.min(Math.max(x0, -clip), clip);
      const denoised = f32(f32(cOut * x0) + f32(cSkip * x));
      out[i] = last ? denoised : f32(f32(sqrtAPrev * denoised) + f32(sqrtBPrev * noise[i]));
    }
    this.stepIndex += 1;
    return out;
  }
}
