// Euler (Karras et al. 2022, Algorithm 2 without churn), a port of diffusers' EulerDiscreteScheduler with its
// defaults (s_churn = 0, linear sigma interpolation). Arithmetic in float32 in diffusers' order.

import {
  arangeDown, checkStepArgs, interpIndex, makeAlphasCumprod, makeBetas, numpyLinspace, requireSupported,
  resolveConfig, roundHalfEven, trainSigmas,
} from "./common.js";

const f32 = Math.fround;

export const EULER_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  interpolation_type: "linear",
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  timestep_spacing: "linspace",
  timestep_type: "discrete",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  final_sigmas_type: "zero",
};

export class EulerDiscreteScheduler {
  /** @param {object} config a diffusers scheduler config dict (unknown keys are ignored, like from_config) */
  constructor(config = {}) {
    this.config = resolveConfig(EULER_DEFAULTS, config);
    requireSupported(this.config, "EulerDiscreteScheduler", {
      prediction_type: ["epsilon", "v_prediction", "sample", "original_sample"],
      interpolation_type: ["linear"],
      use_karras_sigmas: [false],
      use_exponential_sigmas: [false],
      use_beta_sigmas: [false],
      timestep_type: ["discrete"],
      rescale_betas_zero_snr: [false],
      final_sigmas_type: ["zero", "sigma_min"],
      timestep_spacing: ["linspace", "leading", "trailing"],
    });
    this.alphasCumprod = makeAlphasCumprod(makeBetas(this.config));
    this.trainSigmas = trainSigmas(this.alphasCumprod);
    this.timesteps = [];
    this.sigmas = new Float32Array(0);
  }

  setTimesteps(numInferenceSteps) {
    const c = this.config;
    const n = numInferenceSteps;
    if (!Number.isInteger(n) || n < 1) throw new Error(`number of steps must be a positive integer, got ${n}`);
    const N = c.num_train_timesteps;
    let timesteps;
    if (c.timestep_spacing === "linspace") {
      timesteps = numpyLinspace(0, N - 1, n).map(f32).reverse();
    } else if (c.timestep_spacing === "leading") {
      const ratio = Math.floor(N / n);
      timesteps = Array.from({ length: n }, (_, i) => i * ratio).reverse().map((t) => f32(t + c.steps_offset));
    } else {
      timesteps = arangeDown(N, 0, -N / n).map((t) => f32(roundHalfEven(t) - 1));
    }
    const sigmas = timesteps.map((t) => interpIndex(t, this.trainSigmas));
    const a0 = this.alphasCumprod[0];
    const sigmaLast = c.final_sigmas_type === "zero" ? 0 : f32(Math.sqrt(f32(f32(1 - a0) / a0)));
    this.timesteps = timesteps;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.numInferenceSteps = n;
    this.stepIndex = null;
    const maxSigma = this.sigmas.reduce((a, b) => Math.max(a, b), 0);
    this.initNoiseSigma = c.timestep_spacing === "leading" ? f32(Math.sqrt(f32(f32(maxSigma * maxSigma) + 1)))
      : maxSigma;
  }

  indexForTimestep(t) {
    const hits = [];
    this.timesteps.forEach((v, i) => { if (v === t) hits.push(i); });
    if (hits.length === 0) throw new Error(`timestep ${t} is not in the schedule`);
    return hits.length > 1 ? hits[1] : hits[0];
  }

  /** Divide the latents by sqrt(sigma^2 + 1) before the UNet call. */
  scaleModelInput(sample, t) {
    if (this.stepIndex === null) this.stepIndex = this.indexForTimestep(t);
    const sigma = this.sigmas[this.stepIndex];
    const scale = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    return sample.map((x) => f32(x / scale));
  }

  step(modelOutput, t, sample) {
    if (this.numInferenceSteps === undefined) throw new Error("call setTimesteps(n) before step()");
    checkStepArgs("EulerDiscreteScheduler", modelOutput, sample);
    if (this.stepIndex === null) this.stepIndex = this.indexForTimestep(t);
    const sigma = this.sigmas[this.stepIndex];
    const dt = f32(this.sigmas[this.stepIndex + 1] - sigma);
    const kind = this.config.prediction_type;
    const vScaleM = f32(-sigma / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
    const vScaleX = f32(f32(sigma * sigma) + 1);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const x = sample[k];
      const m = modelOutput[k];
      let x0;
      if (kind === "epsilon") x0 = f32(x - f32(sigma * m));
      else if (kind === "v_prediction") x0 = f32(f32(m * vScaleM) + f32(x / vScaleX));
      else x0 = m;
      const derivative = f32(f32(x - x0) / sigma);
      out[k] = f32(x + f32(derivative * dt));
    }
    this.stepIndex += 1;
    return out;
  }
}
