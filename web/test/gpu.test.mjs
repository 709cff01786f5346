// The WebGPU checks: clear messages for a missing navigator.gpu, a missing shader-f16 and too small limits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { adapterProblems, deviceLimits, PageError, requestDevice, withGpuErrorCheck } from "../src/gpu.js";

const MiB = 1 << 20;
function fakeAdapter({ f16 = false, binding = 1024 * MiB, buffer = 1024 * MiB } = {}) {
  const requests = [];
  return {
    requests,
    features: new Set(f16 ? ["shader-f16"] : []),
    limits: { maxStorageBufferBindingSize: binding, maxBufferSize: buffer, maxComputeWorkgroupStorageSize: 32768 },
    async requestDevice(desc) { requests.push(desc); return { fake: true }; },
  };
}
const gpuWith = (adapter) => ({ requestAdapter: async () => adapter });

test("no navigator.gpu: says WebGPU is missing", async () => {
  await assert.rejects(requestDevice({}, undefined), (e) => e instanceof PageError && /navigator\.gpu/.test(e.message));
});

test("no adapter: says so", async () => {
  await assert.rejects(requestDevice({}, gpuWith(null)), /no GPU adapter/);
});

test("f16 model on an adapter without shader-f16 is refused by name", async () => {
  await assert.rejects(requestDevice({ requires_f16: true }, gpuWith(fakeAdapter())), /shader-f16/);
  assert.deepEqual(adapterProblems(fakeAdapter({ f16: true }), { requires_f16: true }), []);
});

test("buffer limits below max_buffer_bytes are named with both sizes", () => {
  const problems = adapterProblems(fakeAdapter({ binding: 128 * MiB }), { max_buffer_bytes: 512 * MiB });
  assert.equal(problems.length, 1);
  assert.match(problems[0], /maxStorageBufferBindingSize 512 MiB, but this GPU adapter offers 128 MiB/);
  const both = adapterProblems(fakeAdapter({ binding: 64 * MiB, buffer: 256 * MiB }), { max_buffer_bytes: 300 * MiB });
  assert.equal(both.length, 2);
});

test("every limit in required_limits is checked and named", () => {
  const adapter = fakeAdapter();
  adapter.limits.maxStorageBuffersPerShaderStage = 8;
  const problems = adapterProblems(adapter, { required_limits: { maxStorageBuffersPerShaderStage: 10,
    maxComputeWorkgroupStorageSize: 16384 } });
  assert.deepEqual(problems, ["the model needs maxStorageBuffersPerShaderStage 10, but this GPU adapter offers 8"]);
});

test("a missing shader-f16 on NVIDIA says how to turn it on", () => {
  const adapter = { ...fakeAdapter(), info: { vendor: "nvidia", description: "" } };
  const [problem] = adapterProblems(adapter, { requires_f16: true });
  assert.match(problem, /--enable-dawn-features=vulkan_enable_f16_on_nvidia/);
  assert.doesNotMatch(adapterProblems(fakeAdapter(), { requires_f16: true })[0], /nvidia/i);
});

test("a fitting adapter gives a device with the f16 feature and exactly the limits the model needs", async () => {
  const adapter = fakeAdapter({ f16: true });
  const manifest = { requires_f16: true, required_limits: { maxStorageBufferBindingSize: 200 * MiB,
    maxBufferSize: 200 * MiB, maxStorageBuffersPerShaderStage: 6 } };
  const { device } = await requestDevice(manifest, gpuWith(adapter));
  assert.ok(device.fake);
  assert.deepEqual(adapter.requests[0].requiredFeatures, ["shader-f16"]);
  // above WebGPU's defaults: requested as needed; within them (6 storage buffers <= 8): left at the default
  assert.deepEqual(adapter.requests[0].requiredLimits, { maxStorageBufferBindingSize: 200 * MiB });
  assert.deepEqual(deviceLimits(adapter, { required_limits: { maxBufferSize: 100 * MiB } }), {});
});

test("GPU errors reported in the error scopes fail the action", async () => {
  const scopes = [];
  const device = (errors) => ({
    pushErrorScope: (f) => scopes.push(f),
    popErrorScope: async () => errors[scopes.pop()] ?? null,
  });
  assert.equal(await withGpuErrorCheck(device({}), "testing", async () => 42), 42);
  await assert.rejects(withGpuErrorCheck(device({ validation: { message: "bad bind group" } }), "testing",
    async () => 1), /error while testing: bad bind group/);
  await assert.rejects(withGpuErrorCheck(device({ "out-of-memory": { message: "oom" } }), "testing",
    async () => 1), /out of memory while testing/);
  assert.equal(scopes.length, 0);
});
