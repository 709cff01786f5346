// DPM-Solver++ multistep (Lu et al. 2022), a port of diffusers' DPMSolverMultistepScheduler for its
// deterministic, non-deprecated variant: algorithm_type "dpmsolver++", solver_order 1-3, midpoint or heun.
// Element-wise arithmetic is done in float32 (Math.fround after every operation, in diffusers' order), so a run
// matches diffusers on the CPU to float32 rounding (see web/test/schedulers.test.mjs for the measured tolerance).

import {
  arangeDown, checkStepArgs, interpIndex, makeAlphasCumprod, makeBetas, numpyLinspace, requireSupported,
  resolveConfig, roundHalfEven, trainSigmas,
} from "./common.js";

const f32 = Math.fround;

export const DPM_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_lu_lambdas: false,
  use_flow_sigmas: false,
  final_sigmas_type: "zero",
  lambda_min_clipped: -Infinity,
  variance_type: null,
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
};

/** alpha_t and sigma_t of a (float32) Karras sigma, in float32 as diffusers computes them. */
function alphaSigma(sigma) {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
  return [alpha, f32(sigma * alpha)];
}

const lambdaOf = (alpha, sigma) => f32(f32(Math.log(alpha)) - f32(Math.log(sigma)));

export class DPMSolverMultistepScheduler {
  /** @param {object} config a diffusers scheduler config dict (unknown keys are ignored, like from_config) */
  constructor(config = {}) {
    this.config = resolveConfig(DPM_DEFAULTS, config);
    const c = this.config;
    requireSupported(c, "DPMSolverMultistepScheduler", {
      algorithm_type: ["dpmsolver++"],
      solver_type: ["midpoint", "heun"],
      solver_order: [1, 2, 3],
      prediction_type: ["epsilon", "v_prediction", "sample"],
      thresholding: [false],
      use_karras_sigmas: [false],
      use_exponential_sigmas: [false],
      use_beta_sigmas: [false],
      use_lu_lambdas: [false],
      use_flow_sigmas: [false],
      variance_type: [null],
      rescale_betas_zero_snr: [false],
      final_sigmas_type: ["zero", "sigma_min"],
      timestep_spacing: ["linspace", "leading", "trailing"],
    });
    this.alphasCumprod = makeAlphasCumprod(makeBetas(c));
    this.trainSigmas = trainSigmas(this.alphasCumprod);
    this.initNoiseSigma = 1.0;
    this.timesteps = [];
    this.sigmas = new Float32Array(0);
  }

  /** Number of train steps before lambda(t) falls below lambda_min_clipped (all of them by default). */
  lastTimestep() {
    const c = this.config;
    const lambdas = Array.from(this.alphasCumprod, (a) => {
      const alpha = f32(Math.sqrt(a));
      return lambdaOf(alpha, f32(Math.sqrt(f32(1 - a))));
    }).reverse();
    const clippedIdx = lambdas.filter((l) => l < c.lambda_min_clipped).length; // searchsorted, ascending
    return c.num_train_timesteps - clippedIdx;
  }

  setTimesteps(numInferenceSteps) {
    const c = this.config;
    const n = numInferenceSteps;
    if (!Number.isInteger(n) || n < 1) throw new Error(`number of steps must be a positive integer, got ${n}`);
    const last = this.lastTimestep();
    let timesteps;
    if (c.timestep_spacing === "linspace") {
      timesteps = numpyLinspace(0, last - 1, n + 1).map(roundHalfEven).reverse().slice(0, -1);
    } else if (c.timestep_spacing === "leading") {
      const ratio = Math.floor(last / (n + 1));
      timesteps = Array.from({ length: n + 1 }, (_, i) => i * ratio).reverse().slice(0, -1)
        .map((t) => t + c.steps_offset);
    } else {
      timesteps = arangeDown(last, 0, -c.num_train_timesteps / n).map((t) => roundHalfEven(t) - 1);
    }
    const sigmas = timesteps.map((t) => interpIndex(t, this.trainSigmas));
    const a0 = this.alphasCumprod[0];
    const sigmaLast = c.final_sigmas_type === "zero" ? 0 : f32(Math.sqrt(f32(f32(1 - a0) / a0)));
    this.timesteps = timesteps;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.numInferenceSteps = timesteps.length;
    this.modelOutputs = new Array(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  /** DPM-Solver does not scale the model input. */
  scaleModelInput(sample) {
    return sample;
  }

  indexForTimestep(t) {
    const hits = [];
    this.timesteps.forEach((v, i) => { if (v === t) hits.push(i); });
    if (hits.length === 0) return this.timesteps.length - 1;
    return hits.length > 1 ? hits[1] : hits[0];
  }

  /** The data (x0) prediction DPM-Solver++ integrates, from the model's epsilon / v / x0 prediction. */
  convertModelOutput(modelOutput, sample) {
    const [alpha, sigma] = alphaSigma(this.sigmas[this.stepIndex]);
    const kind = this.config.prediction_type;
    if (kind === "sample") return Float32Array.from(modelOutput);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const m = modelOutput[i];
      const x = sample[i];
      out[i] = kind === "epsilon" ? f32(f32(x - f32(sigma * m)) / alpha) : f32(f32(alpha * x) - f32(sigma * m));
    }
    return out;
  }

  firstOrderUpdate(m0, sample) {
    const i = this.stepIndex;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[i + 1]);
    const [alphaS, sigmaS] = alphaSigma(this.sigmas[i]);
    const h = f32(lambdaOf(alphaT, sigmaT) - lambdaOf(alphaS, sigmaS));
    const a = f32(sigmaT / sigmaS);
    const b = f32(alphaT * f32(f32(Math.exp(-h)) - 1));
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) out[k] = f32(f32(a * sample[k]) - f32(b * m0[k]));
    return out;
  }

  secondOrderUpdate(sample) {
    const i = this.stepIndex;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[i + 1]);
    const [alphaS0, sigmaS0] = alphaSigma(this.sigmas[i]);
    const [alphaS1, sigmaS1] = alphaSigma(this.sigmas[i - 1]);
    const lambdaT = lambdaOf(alphaT, sigmaT);
    const lambdaS0 = lambdaOf(alphaS0, sigmaS0);
    const lambdaS1 = lambdaOf(alphaS1, sigmaS1);
    const m0 = this.modelOutputs.at(-1);
    const m1 = this.modelOutputs.at(-2);
    const h = f32(lambdaT - lambdaS0);
    const h0 = f32(lambdaS0 - lambdaS1);
    const invR0 = f32(1 / f32(h0 / h));
    const a = f32(sigmaT / sigmaS0);
    const e = f32(f32(Math.exp(-h)) - 1);
    const b = f32(alphaT * e); // x = a*x - b*D0 -/+ d*D1
    const midpoint = this.config.solver_type === "midpoint";
    const d = midpoint ? f32(0.5 * b) : f32(alphaT * f32(f32(e / h) + 1));
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const d1 = f32(invR0 * f32(m0[k] - m1[k]));
      const base = f32(f32(a * sample[k]) - f32(b * m0[k]));
      out[k] = midpoint ? f32(base - f32(d * d1)) : f32(base + f32(d * d1));
    }
    return out;
  }

  thirdOrderUpdate(sample) {
    const i = this.stepIndex;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[i + 1]);
    const [alphaS0, sigmaS0] = alphaSigma(this.sigmas[i]);
    const [alphaS1, sigmaS1] = alphaSigma(this.sigmas[i - 1]);
    const [alphaS2, sigmaS2] = alphaSigma(this.sigmas[i - 2]);
    const lT = lambdaOf(alphaT, sigmaT);
    const l0 = lambdaOf(alphaS0, sigmaS0);
    const l1 = lambdaOf(alphaS1, sigmaS1);
    const l2 = lambdaOf(alphaS2, sigmaS2);
    const [m0, m1, m2] = [this.modelOutputs.at(-1), this.modelOutputs.at(-2), this.modelOutputs.at(-3)];
    const h = f32(lT - l0);
    const r0 = f32(f32(l0 - l1) / h);
    const r1 = f32(f32(l1 - l2) / h);
    const invR0 = f32(1 / r0);
    const invR1 = f32(1 / r1);
    const w = f32(r0 / f32(r0 + r1));
    const invR01 = f32(1 / f32(r0 + r1));
    const e = f32(f32(Math.exp(-h)) - 1);
    const a = f32(sigmaT / sigmaS0); // x = a*x + c0*D0 + c1*D1 + c2*D2
    const c0 = -f32(alphaT * e);
    const c1 = f32(alphaT * f32(f32(e / h) + 1));
    const c2 = -f32(alphaT * f32(f32(f32(e + h) / f32(h * h)) - 0.5));
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const d10 = f32(invR0 * f32(m0[k] - m1[k]));
      const d11 = f32(invR1 * f32(m1[k] - m2[k]));
      const d1 = f32(d10 + f32(w * f32(d10 - d11)));
      const d2 = f32(invR01 * f32(d10 - d11));
      out[k] = f32(f32(f32(f32(a * sample[k]) + f32(c0 * m0[k])) + f32(c1 * d1)) + f32(c2 * d2));
    }
    return out;
  }

  /**
   * One solver step from timestep `t`.
   * @param {Float32Array} modelOutput the UNet's (guided) prediction at `t`
   * @param {number} t the current timestep (one of this.timesteps)
   * @param {Float32Array} sample the current latents
   * @returns {Float32Array} the latents at the next timestep
   */
  step(modelOutput, t, sample) {
    if (this.numInferenceSteps === undefined) throw new Error("call setTimesteps(n) before step()");
    checkStepArgs("DPMSolverMultistepScheduler", modelOutput, sample);
    const c = this.config;
    if (this.stepIndex === null) this.stepIndex = this.indexForTimestep(t);
    const n = this.timesteps.length;
    const lowerOrderFinal = this.stepIndex === n - 1 &&
      (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === "zero");
    const lowerOrderSecond = this.stepIndex === n - 2 && c.lower_order_final && n < 15;

    const converted = this.convertModelOutput(modelOutput, sample);
    this.modelOutputs.shift();
    this.modelOutputs.push(converted);

    let prev;
    if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) {
      prev = this.firstOrderUpdate(converted, sample);
    } else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) {
      prev = this.secondOrderUpdate(sample);
    } else {
      prev = this.thirdOrderUpdate(sample);
    }
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this.stepIndex += 1;
    return prev;
  }
}
