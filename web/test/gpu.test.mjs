// The WebGPU checks: clear messages for a missing navigator.gpu, a missing shader-f16 and too small limits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { adapterProblems, PageError, requestDevice, withGpuErrorCheck } from "../src/gpu.js";

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
  assert.match(problems[0], /maxStorageBufferBindingSize is 128 MiB/);
  assert.match(problems[0], /512 MiB/);
  const both = adapterProblems(fakeAdapter({ binding: 64 * MiB, buffer: 256 * MiB }), { max_buffer_bytes: 300 * MiB });
  assert.equal(both.length, 2);
});

test("a fitting adapter gives a device with the f16 feature and the adapter's limits", async () => {
  const adapter = fakeAdapter({ f16: true });
  const { device } = await requestDevice({ requires_f16: true, max_buffer_bytes: 64 * MiB }, gpuWith(adapter));
  assert.ok(device.fake);
  assert.deepEqual(adapter.requests[0].requiredFeatures, ["shader-f16"]);
  assert.equal(adapter.requests[0].requiredLimits.maxStorageBufferBindingSize, 1024 * MiB);
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
