// WebGPU device: one GPUDevice shared by the three TVM instances, asked for exactly the limits and features the
// model needs (manifest.json: requires_f16, required_limits - measured per kernel when the site was built), with
// a message naming what the adapter lacks.

export class PageError extends Error {} // an error whose message is meant for the user, shown as is

// WebGPU's default limits: what a device gets for any limit the page does not ask more of.
export const WEBGPU_DEFAULT_LIMITS = {
  maxStorageBuffersPerShaderStage: 8, maxStorageBufferBindingSize: 128 << 20, maxBufferSize: 256 << 20,
  maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256, maxComputeWorkgroupSizeZ: 64, maxComputeWorkgroupsPerDimension: 65535,
};

const MiB = 1 << 20;
const show = (name, n) => (/Size$/.test(name) && n >= MiB ? `${Math.ceil(n / MiB)} MiB` : String(n));

/** The limits the site's kernels need (manifest.required_limits, measured at build time). */
export function requiredLimitsOf(manifest) {
  const need = { ...(manifest.required_limits ?? {}) };
  if (manifest.max_buffer_bytes) {  // manifests written before required_limits
    for (const name of ["maxStorageBufferBindingSize", "maxBufferSize"]) {
      need[name] = Math.max(need[name] ?? 0, manifest.max_buffer_bytes);
    }
  }
  return need;
}

const F16_ON_NVIDIA = "NVIDIA GPUs hide shader-f16 in Chrome and Dawn (a driver-bug blocklist): start Chrome with " +
  "--enable-dawn-features=vulkan_enable_f16_on_nvidia (Linux, Vulkan) to turn it on, or use a float32 build";

/**
 * What this adapter lacks for the model, as sentences (empty when it is good enough).
 * @param {{features: Set<string>, limits: object, info?: object}} adapter a GPUAdapter (or the same shape)
 * @param {{requires_f16?: boolean, required_limits?: object, max_buffer_bytes?: number}} manifest
 */
export function adapterProblems(adapter, manifest) {
  const problems = [];
  if (manifest.requires_f16 && !adapter.features.has("shader-f16")) {
    const nvidia = /nvidia/i.test(`${adapter.info?.vendor ?? ""} ${adapter.info?.description ?? ""}`);
    problems.push('this model uses float16 shaders, but the GPU adapter has no "shader-f16" feature ' +
      (nvidia ? `(${F16_ON_NVIDIA})` : "(use a float32 build of the model, or a browser/GPU that offers shader-f16)"));
  }
  for (const [name, need] of Object.entries(requiredLimitsOf(manifest))) {
    const have = adapter.limits[name];
    if (have !== undefined && need > have) {
      problems.push(`the model needs ${name} ${show(name, need)}, but this GPU adapter offers ${show(name, have)}`);
    }
  }
  return problems;
}

/** The limits we request: exactly what the kernels need, where that is above WebGPU's defaults. */
export function deviceLimits(adapter, manifest) {
  return Object.fromEntries(Object.entries(requiredLimitsOf(manifest))
    .filter(([name, need]) => adapter.limits[name] !== undefined && need > (WEBGPU_DEFAULT_LIMITS[name] ?? 0))
    .map(([name, need]) => [name, need]));
}

/** The adapter the page runs on (high-performance), or a PageError that says why there is none. */
export async function requestAdapter(gpu = globalThis.navigator?.gpu) {
  if (!gpu) {
    throw new PageError("This browser does not offer WebGPU (navigator.gpu is missing). Use a recent Chrome, " +
      "Edge or another WebGPU browser, on a page served over http://localhost or https.");
  }
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new PageError("WebGPU is present but no GPU adapter is available (requestAdapter returned null): " +
      "the GPU may be blocklisted or disabled in this browser.");
  }
  return adapter;
}

/**
 * Request a GPUDevice fit for the model, or throw a PageError that says why not.
 * @param {object} manifest
 * @param {GPU|undefined} gpu navigator.gpu
 * @param {string[]} optionalFeatures also requested where the adapter has them (e.g. "timestamp-query")
 * @param {{adapter?: GPUAdapter, features?: string[]}} [more] an adapter already requested (requestAdapter), and
 *   features the device must have (a variant's, variants.js pickVariant: checked against the adapter there)
 * @returns {Promise<{adapter: GPUAdapter, device: GPUDevice}>}
 */
export async function requestDevice(manifest, gpu = globalThis.navigator?.gpu, optionalFeatures = [],
  { adapter = null, features = [] } = {}) {
  adapter ??= await requestAdapter(gpu);
  const problems = adapterProblems(adapter, manifest);
  if (problems.length) throw new PageError(`This GPU cannot run the model: ${problems.join("; ")}.`);
  const requiredFeatures = [...new Set([...(manifest.requires_f16 ? ["shader-f16"] : []), ...features,
    ...optionalFeatures.filter((f) => adapter.features.has(f))])];
  let device;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits: deviceLimits(adapter, manifest) });
  } catch (err) {
    throw new PageError(`The GPU refused to create a device: ${err.message ?? err}`);
  }
  return { adapter, device };
}

/**
 * Run `action` inside WebGPU error scopes and throw if the GPU reported a validation or out-of-memory error:
 * otherwise a failed kernel would leave stale buffers and the page would show a wrong image.
 */
export async function withGpuErrorCheck(device, what, action) {
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  let result;
  let actionError;
  try {
    result = await action();
  } catch (err) {
    actionError = err;
  }
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  if (actionError) throw actionError;
  if (oom) throw new PageError(`The GPU ran out of memory while ${what}: ${oom.message}`);
  if (validation) throw new PageError(`WebGPU reported an error while ${what}: ${validation.message}`);
  return result;
}
