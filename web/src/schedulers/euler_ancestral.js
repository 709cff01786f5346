// Euler ancestral, a port of diffusers' EulerAncestralDiscreteScheduler: an Euler step down to sigma_down, then
// fresh noise of size sigma_up. Timesteps, sigmas, input scaling and init noise sigma are Euler's (its trailing
// spacing is SD-Turbo's); the noise comes from `this.noise(n)`, a torch-compatible generator stream the pipeline
// sets (random.js normalStream / randnFrom), so the page and diffusers with the same CPU generator draw the same.

import { EulerDiscreteScheduler } from "./euler_discrete.js";
import { checkStepArgs, requireSupported, resolveConfig } from "./common.js";

const f32 = Math.fround;

export const EULER_ANCESTRAL_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

export class EulerAncestralDiscreteScheduler extends EulerDiscreteScheduler {
  /** @param {object} config a diffusers scheduler config dict (keys this scheduler lacks are ignored) */
  constructor(config = {}) {
    // only the keys diffusers' ancestral scheduler has: an Euler-only key (e.g. use_karras_sigmas) does not apply
    super(resolveConfig(EULER_ANCESTRAL_DEFAULTS, config));
    requireSupported(this.config, "EulerAncestralDiscreteScheduler", { prediction_type: ["epsilon", "v_prediction"] });
    /** @type {((n: number) => Float32Array) | null} the per-step noise source */
    this.noise = null;
  }

  step(modelOutput, t, sample) {
    if (this.numInferenceSteps === undefined) throw new Error("call setTimesteps(n) before step()");
    checkStepArgs("EulerAncestralDiscreteScheduler", modelOutput, sample);
    if (!this.noise) throw new Error("EulerAncestralDiscreteScheduler.step needs a noise source (scheduler.noise)");
    if (this.stepIndex === null) this.stepIndex = this.indexForTimestep(t);
    const sigma = this.sigmas[this.stepIndex];
    const to = this.sigmas[this.stepIndex + 1];
    // 0-d float32 tensors in diffusers, evaluated left to right
    const sq = (x) => f32(x * x);
    const sigmaUp = f32(Math.sqrt(f32(f32(sq(to) * f32(sq(sigma) - sq(to))) / sq(sigma))));
    const sigmaDown = f32(Math.sqrt(f32(sq(to) - sq(sigmaUp))));
    const dt = f32(sigmaDown - sigma);
    const vScaleM = f32(-sigma / f32(Math.sqrt(f32(sq(sigma) + 1))));
    const vScaleX = f32(sq(sigma) + 1);
    const v = this.config.prediction_type === "v_prediction";
    const noise = this.noise(sample.length);
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const x = sample[k];
      const m = modelOutput[k];
      const x0 = v ? f32(f32(m * vScaleM) + f32(x / vScaleX)) : f32(x - f32(sigma * m));
      const derivative = f32(f32(x - x0) / sigma);
      out[k] = f32(f32(x + f32(derivative * dt)) + f32(noise[k] * sigmaUp));
    }
    this.stepIndex += 1;
    return out;
  }
}
