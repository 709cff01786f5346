// The page's launch path (src/launch.js) against the plain one, on a real WebGPU device (Dawn; lavapipe where
// VK_ICD_FILENAMES points at it, as tests/web/test_web_js.py sets it): the stand-in tvmjs (tests/web/fake_tvmjs.cjs)
// has tvmjs 0.26's WebGPUContext launch, and its kernels run for real. Without a GPU adapter these tests skip.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { PageError } from "../src/gpu.js";
import { installKernelOverrides, installLaunch } from "../src/launch.js";

const fake = createRequire(import.meta.url)("../../tests/web/fake_tvmjs.cjs");

let device = null;
let skip = false;
try {
  const { create, globals } = await import("webgpu");
  Object.assign(globalThis, globals);
  globalThis.websdTestGpu = create([]); // kept: Dawn crashes when the GPU object is collected
  const adapter = await globalThis.websdTestGpu.requestAdapter();
  device = adapter && (await adapter.requestDevice());
} catch (err) {
  skip = `no WebGPU here (${err.message})`;
}
if (!device && !skip) skip = "Dawn found no GPU adapter (set VK_ICD_FILENAMES to lavapipe's ICD)";

/** A stand-in tvmjs instance on the shared device, its launch path installed as the page's loader does. */
async function instance(mode, extra = {}, batched = true, kernels = null) {
  const tvm = await (batched ? fake.instantiate() : fake.instantiateUnbatched());
  tvm.initWebGPU(device);
  const messages = [];
  const launcher = installLaunch(tvm, { mode, log: (m) => messages.push(m), ...extra });
  const overrides = kernels && installKernelOverrides(tvm, kernels);  // after the launch path, as the loader does
  await tvm.asyncLoadWebGPUPipelines(tvm.systemLib());
  const fn = tvm.createVirtualMachine().getFunction("unet");
  /** One call as TvmSubmodel.call makes it: upload, run, read back, free the call's tensors. */
  const call = async (data, shape = [1, 4, data.length / 4, 1]) => {
    tvm.beginScope();
    const x = tvm.empty(shape, "float32", tvm.webgpu());
    x.copyFromRawBytes(new Uint8Array(data.buffer));
    const out = fn(x, []);
    const host = tvm.empty(out.shape, out.dtype, tvm.cpu());
    host.copyFrom(out);
    await tvm.webgpu().sync();
    tvm.endScope();
    return new Float32Array(host.toRawBytes().slice().buffer);
  };
  return { tvm, ctx: tvm.lib.webGPUContext, launcher, messages, call, overrides };
}

const randomData = (n, seed) => {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 1e3);
};

/** Count what the launch asks of the device during `action`. */
async function counted(action) {
  const counts = { bindGroups: 0, passes: 0, writes: 0, dispatches: 0 };
  const spy = (obj, method, key) => {
    const original = obj[method];
    obj[method] = function (...args) { counts[key] += 1; return original.apply(this, args); };
    return () => { obj[method] = original; };
  };
  const undo = [spy(GPUDevice.prototype, "createBindGroup", "bindGroups"),
    spy(GPUCommandEncoder.prototype, "beginComputePass", "passes"), spy(GPUQueue.prototype, "writeBuffer", "writes"),
    spy(GPUComputePassEncoder.prototype, "dispatchWorkgroups", "dispatches")];
  try {
    return { result: await action(), counts };
  } finally {
    undo.forEach((u) => u());
  }
}

for (const batched of [true, false]) {
  const tvmjs = batched ? "tvmjs 0.26 (one pending encoder)" : "tvmjs 0.21 (a submit per dispatch)";
  test(`the same calls through the plain and the replayed path give bit-identical outputs: ${tvmjs}`, { skip },
    async () => {
      const plain = await instance("plain", {}, batched);
      const replay = await instance("replay", {}, batched);
      assert.equal(plain.launcher, null);
      assert.equal(replay.launcher.shared, batched);
      // 4.2M elements: a grid of 65.6k workgroups, which tvmjs spreads into blockIdx.z
      for (const [i, n] of [64, 1000, 4 * 1050000].entries()) {
        const data = randomData(n, i + 1);
        const want = await plain.call(data);
        const got = await replay.call(data);
        assert.deepEqual(Buffer.from(got.buffer), Buffer.from(want.buffer));
        assert.equal(got[n - 1], 0.5 * data[n - 1]); // and the kernels ran: 0.5 * x
      }
      assert.deepEqual(replay.messages, []);
    });
}

test("a warm call replays: one pass, no scalar writes, bind groups only for its new tensors", { skip }, async () => {
  const replay = await instance("replay");
  const data = randomData(4096, 7);
  const first = await counted(() => replay.call(data));
  const warm = await counted(() => replay.call(data));
  assert.deepEqual(warm.result, first.result);
  // 3 launches: scale(t, x) and scale(out, copy) bind the call's new input and output, add(sum, t, t) is replayed
  assert.equal(warm.counts.dispatches, 3);
  assert.equal(warm.counts.bindGroups, 2);
  // the copy within the GPU sits between the 2nd and 3rd launch, so 2 passes; no uniform writes, only the upload
  assert.equal(warm.counts.passes, 2);
  assert.equal(warm.counts.writes, 1);
  assert.equal(first.counts.writes, 1 + replay.launcher.report().scalarSlots);
  // plain tvmjs: a pass, a bind group and a uniform write per launch
  const plain = await instance("plain");
  await plain.call(data);
  const plainWarm = await counted(() => plain.call(data));
  assert.deepEqual(plainWarm.counts, { bindGroups: 3, passes: 3, writes: 1 + 3, dispatches: 3 });
  // freed tensors take their bind groups with them: only the pooled intermediates' one stays
  assert.equal(replay.launcher.report().liveBindGroups, 1);
});

test("a write between launches still reaches only the later launch", { skip }, async () => {
  for (const [mode, batched] of [["plain", true], ["replay", true], ["plain", false], ["replay", false]]) {
    const { tvm, ctx } = await instance(mode, {}, batched);
    const scale = ctx.createShader(fake.FINFO.scale, fake.KERNELS.scale.code);
    const n = 256;
    const [x, a, b] = [0, 1, 2].map(() => tvm.empty([n], "float32", tvm.webgpu()));
    x.copyFromRawBytes(new Uint8Array(new Float32Array(n).fill(1).buffer));
    scale(a.ptr, x.ptr, n, 2, n / 64, 64);
    x.copyFromRawBytes(new Uint8Array(new Float32Array(n).fill(5).buffer)); // queue.writeBuffer: immediate
    scale(b.ptr, x.ptr, n, 2, n / 64, 64);
    const [ha, hb] = [a, b].map((t) => tvm.empty([n], "float32", tvm.cpu()).copyFrom(t));
    await tvm.webgpu().sync();
    assert.equal(new Float32Array(ha.toRawBytes().slice().buffer)[n - 1], 2, `${mode} ${batched}`);
    assert.equal(new Float32Array(hb.toRawBytes().slice().buffer)[n - 1], 10, `${mode} ${batched}`);
  }
});

test("scalars that keep changing (a dynamic shape) fall back to tvmjs' own launch, saying so", { skip }, async () => {
  const replay = await instance("replay", { maxSlots: 4 });
  const { tvm, ctx, launcher, messages } = replay;
  const scale = ctx.createShader(fake.FINFO.scale, fake.KERNELS.scale.code);
  const n = 64;
  const [x, y] = [0, 1].map(() => tvm.empty([n], "float32", tvm.webgpu()));
  x.copyFromRawBytes(new Uint8Array(new Float32Array(n).fill(3).buffer));
  const results = [];
  for (let factor = 1; factor <= 6; factor++) {
    scale(y.ptr, x.ptr, n, factor, 1, 64);
    const host = tvm.empty([n], "float32", tvm.cpu()).copyFrom(y);
    await tvm.webgpu().sync();
    results.push(new Float32Array(host.toRawBytes().slice().buffer)[0]);
  }
  assert.deepEqual(results, [3, 6, 9, 12, 15, 18]);
  assert.match(launcher.report().fallback, /more than 4 distinct scalar argument sets/);
  assert.equal(messages.length, 1);
  assert.match(messages[0], /^launch: falling back to tvmjs' own kernel launch/);
  assert.equal(launcher.report().plainLaunches, 2);
});

test("buffers that keep changing fall back too, and results stay right", { skip }, async () => {
  const replay = await instance("replay", { maxBindGroups: 2 });
  const data = randomData(256, 3);
  for (let i = 0; i < 3; i++) {
    const got = await replay.call(data);
    assert.equal(got[5], 0.5 * data[5]);
  }
  assert.match(replay.launcher.report().fallback, /more than 2 live bind groups/);
});

test("an unknown mode is refused; a tvmjs without a WebGPU context keeps its own launch", async () => {
  assert.throws(() => installLaunch({}, { mode: "fast" }), /unknown launch mode "fast"/);
  const messages = [];
  assert.equal(installLaunch({ lib: {} }, { mode: "replay", log: (m) => messages.push(m) }), null);
  assert.match(messages[0], /no lib\.webGPUContext; keeping tvmjs' own kernel launch/);
});

// a variant's kernel override (manifest.variants[].submodels.*.kernels): here "scale" computes 2 * x * factor, so
// the unet's 0.5 * x becomes 2 * x (0.25 -> 0.5, t + t, then 1.0 -> 2.0) and the output shows which WGSL ran
const DOUBLED = { scale: fake.KERNELS.scale.code.replace("x[i] * podArgs.factor", "2.0 * x[i] * podArgs.factor") };

for (const [mode, extra] of [["plain", {}], ["replay", {}], ["replay", { maxBindGroups: 1 }]]) {
  const path = extra.maxBindGroups ? "replay falling back to tvmjs' launch" : mode;
  test(`a kernel override replaces the WGSL the shader module is created from: ${path}`, { skip }, async () => {
    assert.notEqual(DOUBLED.scale, fake.KERNELS.scale.code);
    const codes = [];
    const original = GPUDevice.prototype.createShaderModule;
    GPUDevice.prototype.createShaderModule = function (desc) { codes.push(desc.code); return original.call(this, desc); };
    let run;
    try {
      run = await instance(mode, extra, true, DOUBLED);
      const data = randomData(256, 11);
      const got = await run.call(data);
      for (const i of [0, 100, 255]) assert.equal(got[i], 2 * data[i]);
    } finally {
      GPUDevice.prototype.createShaderModule = original;
    }
    assert.ok(codes.includes(DOUBLED.scale));
    assert.ok(!codes.includes(fake.KERNELS.scale.code));  // the module's own scale never reached the device
    assert.ok(codes.includes(fake.KERNELS.add.code));  // the kernels the variant does not list keep theirs
    assert.deepEqual([run.overrides.kernels, [...run.overrides.applied]], [["scale"], ["scale"]]);
    if (extra.maxBindGroups) {
      assert.match(run.launcher.report().fallback, /more than 1 live bind groups/);
      assert.ok(run.launcher.report().plainLaunches > 0);
    }
  });
}

test("a tvmjs without a WebGPU context cannot take kernel overrides: a PageError naming the way out", () => {
  assert.throws(() => installKernelOverrides({ lib: {} }, DOUBLED, "unet of variant subgroup-matrix"),
    (e) => e instanceof PageError &&
      /^unet of variant subgroup-matrix replaces kernels, but this tvmjs has no webGPUContext.*variant=default/.test(
        e.message));
});
