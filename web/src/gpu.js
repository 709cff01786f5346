// WebGPU device: one GPUDevice shared by the three TVM instances, asked for the limits and features the
// model needs (manifest.json: requires_f16, max_buffer_bytes), with a message naming what is missing.

export class PageError extends Error {} // an error whose message is meant for the user, shown as is

const MiB = 1 << 20;
const mib = (n) => `${Math.ceil(n / MiB)} MiB`;

/**
 * What this adapter lacks for the model, as sentences (empty when it is good enough).
 * @param {{features: Set<string>, limits: object}} adapter a GPUAdapter (or the same shape)
 * @param {{requires_f16?: boolean, max_buffer_bytes?: number}} manifest
 */
export function adapterProblems(adapter, manifest) {
  const problems = [];
  if (manifest.requires_f16 && !adapter.features.has("shader-f16")) {
    problems.push('this model uses float16 shaders, but the GPU adapter has no "shader-f16" feature ' +
      "(use a float32 build of the model, or a browser/GPU that offers shader-f16)");
  }
  const need = manifest.max_buffer_bytes ?? 0;
  for (const limit of ["maxStorageBufferBindingSize", "maxBufferSize"]) {
    const have = adapter.limits[limit];
    if (need > have) {
      problems.push(`the model needs GPU buffers of ${mib(need)}, but the adapter's ${limit} is ${mib(have)}`);
    }
  }
  return problems;
}

/** The limits we ask for: the adapter's best for those TVM's kernels depend on. */
function requiredLimits(adapter) {
  const names = ["maxBufferSize", "maxStorageBufferBindingSize", "maxComputeWorkgroupStorageSize",
    "maxStorageBuffersPerShaderStage", "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX",
    "maxComputeWorkgroupSizeY", "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupsPerDimension"];
  return Object.fromEntries(names.filter((n) => adapter.limits[n] !== undefined).map((n) => [n, adapter.limits[n]]));
}

/**
 * Request a GPUDevice fit for the model, or throw a PageError that says why not.
 * @param {object} manifest
 * @param {GPU|undefined} gpu navigator.gpu
 * @returns {Promise<{adapter: GPUAdapter, device: GPUDevice}>}
 */
export async function requestDevice(manifest, gpu = globalThis.navigator?.gpu) {
  if (!gpu) {
    throw new PageError("This browser does not offer WebGPU (navigator.gpu is missing). Use a recent Chrome, " +
      "Edge or another WebGPU browser, on a page served over http://localhost or https.");
  }
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new PageError("WebGPU is present but no GPU adapter is available (requestAdapter returned null): " +
      "the GPU may be blocklisted or disabled in this browser.");
  }
  const problems = adapterProblems(adapter, manifest);
  if (problems.length) throw new PageError(`This GPU cannot run the model: ${problems.join("; ")}.`);
  const requiredFeatures = manifest.requires_f16 ? ["shader-f16"] : [];
  let device;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits: requiredLimits(adapter) });
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
