// Noise-schedule pieces shared by the schedulers, following diffusers' arithmetic closely enough to give the
// same timesteps and float32 sigmas: betas and alphas_cumprod are built in float32 (Math.fround) the way
// PyTorch does on the CPU, timesteps use NumPy's linspace and round-half-to-even.

const f32 = Math.fround;

/** Copy `defaults`, overridden by the keys of `config` that it knows (like diffusers' from_config). */
export function resolveConfig(defaults, config = {}) {
  const out = { ...defaults };
  for (const key of Object.keys(defaults)) {
    if (config[key] !== undefined && config[key] !== null) out[key] = config[key];
  }
  // diffusers writes null for "not set"; keep defaults then, but a non-null trained_betas must be honoured.
  if (Array.isArray(config.trained_betas)) out.trained_betas = config.trained_betas;
  return out;
}

/** Refuse config values this port does not implement, naming the key: a silent fallback would give other images. */
export function requireSupported(config, name, allowed) {
  for (const [key, values] of Object.entries(allowed)) {
    if (!values.includes(config[key])) {
      throw new Error(`${name}: ${key}=${JSON.stringify(config[key])} is not supported (supported: ` +
        `${values.map((v) => JSON.stringify(v)).join(", ")})`);
    }
  }
}

/** torch.linspace(start, end, steps, dtype=float32): float32 step, two halves computed from each end. */
function torchLinspaceF32(start, end, steps) {
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const out = new Float32Array(steps);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/** float32 betas of a diffusers beta_schedule. */
export function makeBetas(config) {
  const n = config.num_train_timesteps;
  if (Array.isArray(config.trained_betas)) return Float32Array.from(config.trained_betas);
  if (config.beta_schedule === "linear") return torchLinspaceF32(config.beta_start, config.beta_end, n);
  if (config.beta_schedule === "scaled_linear") {
    const roots = torchLinspaceF32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), n);
    return roots.map((r) => f32(r * r));
  }
  throw new Error(`beta_schedule=${JSON.stringify(config.beta_schedule)} is not supported ` +
    `(supported: "linear", "scaled_linear", or trained_betas)`);
}

/** float32 cumulative product of (1 - beta); PyTorch's CPU cumprod accumulates in float64. */
export function makeAlphasCumprod(betas) {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - betas[i]);
    out[i] = f32(acc);
  }
  return out;
}

/** float32 ((1 - a) / a) ** 0.5 for every alphas_cumprod entry (the "Karras" sigma of each train step). */
export function trainSigmas(alphasCumprod) {
  return alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/** numpy.linspace(start, stop, num): start + i * step, the last value exactly stop ([start] for num = 1). */
export function numpyLinspace(start, stop, num) {
  if (num === 1) return [start]; // not start + 0 * (stop - start) / 0, which is NaN
  const out = new Array(num);
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = start + i * step;
  if (num > 1) out[num - 1] = stop;
  return out;
}

/** numpy.round: halves go to the even neighbour. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** numpy.arange(start, stop, step) for a negative step. */
export function arangeDown(start, stop, step) {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  return Array.from({ length: n }, (_, i) => start + i * step);
}

/** numpy.interp(x, [0, 1, ..., n-1], values) (x inside the range). */
export function interpIndex(x, values) {
  const lo = Math.min(Math.max(Math.floor(x), 0), values.length - 1);
  const hi = Math.min(lo + 1, values.length - 1);
  const w = x - lo;
  return w === 0 ? values[lo] : values[lo] + (values[hi] - values[lo]) * w;
}

/** Check a model output / sample pair before a step: wrong sizes would silently corrupt the image. */
export function checkStepArgs(name, modelOutput, sample) {
  if (!(modelOutput instanceof Float32Array) || !(sample instanceof Float32Array)) {
    throw new Error(`${name}.step expects Float32Array model output and sample`);
  }
  if (modelOutput.length !== sample.length) {
    throw new Error(`${name}.step: model output has ${modelOutput.length} values, sample ${sample.length}`);
  }
}
