// The schedulers the page offers, by the name used in the UI, in URLs and in window.websd.generate().

import { DPMSolverMultistepScheduler } from "./dpm_solver_multistep.js";
import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.js";
import { EulerDiscreteScheduler } from "./euler_discrete.js";
import { LCMScheduler } from "./lcm.js";

export { DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler };

export const SCHEDULERS = {
  "dpm++2m": { label: "DPM-Solver++ 2M", make: (config) => new DPMSolverMultistepScheduler(config) },
  euler: { label: "Euler", make: (config) => new EulerDiscreteScheduler(config) },
  // draws fresh noise each step: the pipeline gives it a noise source (scheduler.noise)
  "euler-a": { label: "Euler ancestral", make: (config) => new EulerAncestralDiscreteScheduler(config) },
  // for Latent Consistency Models (4-8 steps); also noises between steps (scheduler.noise)
  lcm: { label: "LCM", make: (config) => new LCMScheduler(config) },
};

export const DEFAULT_SCHEDULER = "dpm++2m";

/**
 * A scheduler by name, configured from the model's diffusers scheduler config (manifest.json "scheduler").
 * @param {string} name a key of SCHEDULERS
 * @param {object} config
 */
export function createScheduler(name, config) {
  const entry = SCHEDULERS[name];
  if (!entry) {
    throw new Error(`unknown scheduler ${JSON.stringify(name)}; choose one of ${Object.keys(SCHEDULERS).join(", ")}`);
  }
  return entry.make(config);
}
