// The JS schedulers against diffusers: the same timesteps, the same sigmas and the same trajectory over a full
// run fed with the same (random) model outputs. Both sides compute in float32, but PyTorch's CPU linspace and
// sqrt round differently with the SIMD width of the machine (AVX2 vs AVX-512), and log/exp may differ by an ulp,
// so values are compared with tolerances:
//   timesteps: exactly;  sigmas, init noise sigma: relative 1e-6 (measured: 1 ulp, 6e-8);
//   every step's output: max |js - diffusers| <= 1e-5 * max(1, max |diffusers|) (measured worst: < 1e-6; the
//   test prints it per run as a diagnostic).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createScheduler, SCHEDULERS } from "../src/schedulers/index.js";
import { normalStream } from "../src/random.js";
import { readFixture } from "../testlib/fixtures.mjs";

const REL_TOL = 1e-5;
const SIGMA_REL_TOL = 1e-6;

function maxAbsDiff(a, b) {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
const maxAbs = (a) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);

const runs = readFixture("schedulers.json");

test("the fixture covers every scheduler the page offers", () => {
  for (const name of Object.keys(SCHEDULERS)) assert.ok(runs.some((r) => r.scheduler === name), name);
});

for (const run of runs) {
  const label = `${run.scheduler} ${run.steps} steps ${JSON.stringify(
    Object.fromEntries(Object.entries(run.config).filter(([k]) => !["_class_name", "beta_end", "beta_schedule",
      "beta_start", "clip_sample", "num_train_timesteps", "set_alpha_to_one", "skip_prk_steps", "steps_offset",
      "trained_betas"].includes(k))))}`;

  test(`${label}: timesteps, sigmas, init noise sigma`, () => {
    const s = createScheduler(run.scheduler, run.config);
    s.setTimesteps(run.steps);
    assert.deepEqual(Array.from(s.timesteps), run.timesteps);
    if (run.sigmas === null) { // LCM: no sigmas, no input scaling
      assert.equal(s.initNoiseSigma, run.init_noise_sigma);
      return;
    }
    assert.equal(s.sigmas.length, run.sigmas.length);
    s.sigmas.forEach((v, i) => assert.ok(Math.abs(v - run.sigmas[i]) <= SIGMA_REL_TOL * run.sigmas[i],
      `sigma ${i}: ${v} vs ${run.sigmas[i]}`));
    assert.ok(Math.abs(s.initNoiseSigma - run.init_noise_sigma) <= SIGMA_REL_TOL * run.init_noise_sigma);
  });

  test(`${label}: full run follows diffusers`, (t) => {
    const s = createScheduler(run.scheduler, run.config);
    s.setTimesteps(run.steps);
    if (run.noise_seed !== undefined) s.noise = normalStream(BigInt(run.noise_seed)); // the same generator
    let sample = Float32Array.from(run.initial_sample);
    let worst = 0;
    s.timesteps.forEach((ts, i) => {
      const ref = run.steps_data[i];
      const scaled = s.scaleModelInput(sample, ts);
      const scale = Math.max(1, maxAbs(ref.scaled_input));
      assert.ok(maxAbsDiff(scaled, ref.scaled_input) <= REL_TOL * scale, `scaled input at step ${i}`);
      sample = s.step(Float32Array.from(ref.model_output), ts, sample);
      const rel = maxAbsDiff(sample, ref.prev_sample) / Math.max(1, maxAbs(ref.prev_sample));
      worst = Math.max(worst, rel);
      assert.ok(rel <= REL_TOL, `step ${i} (t=${ts}): relative max diff ${rel}`);
    });
    t.diagnostic(`worst relative max abs diff over the run: ${worst.toExponential(2)}`);
  });
}

test("unsupported config values are refused by name", () => {
  assert.throws(() => createScheduler("dpm++2m", { use_karras_sigmas: true }), /use_karras_sigmas/);
  assert.throws(() => createScheduler("dpm++2m", { algorithm_type: "sde-dpmsolver++" }), /algorithm_type/);
  assert.throws(() => createScheduler("euler", { beta_schedule: "squaredcos_cap_v2" }), /beta_schedule/);
  assert.throws(() => createScheduler("euler-a", { prediction_type: "sample" }), /prediction_type/);
  assert.throws(() => createScheduler("nope", {}), /unknown scheduler/);
});

test("step checks its inputs", () => {
  const s = createScheduler("dpm++2m", {});
  assert.throws(() => s.step(new Float32Array(4), 999, new Float32Array(4)), /setTimesteps/);
  s.setTimesteps(5);
  assert.throws(() => s.step(new Float32Array(4), s.timesteps[0], new Float32Array(8)), /4 values/);
});

test("euler-a refuses to step without a noise source", () => {
  const s = createScheduler("euler-a", {});
  s.setTimesteps(2);
  assert.throws(() => s.step(new Float32Array(16), s.timesteps[0], new Float32Array(16)), /noise source/);
});
