// A stand-in for tvmjs.bundle.js (CommonJS, as the runner loads it) for testing the headless runner's code path
// where no TVM source is available to build the real runtime (CI). It keeps tvmjs's API shape, and its WebGPU
// context keeps the shape and the launch of tvmjs 0.26's WebGPUContext (lib.webGPUContext: createShader(Async)
// from a FunctionInfo and WGSL, a bind group + a uniform write + a compute pass per dispatch in one pending
// encoder, flushed before every write, readback, free and sync), so the page's launch path (web/src/launch.js)
// takes it over exactly as it takes over tvmjs'. Each submodel's "function" runs real WGSL kernels on the real
// GPUDevice (Dawn): clip fills [2, 77, 8] with 0; unet returns 0.5 * latents (x * 0.25, then t + t, a copy within
// the GPU and x * 1.0: four launches and a copy); vae fills [1, 8h, 8w, 3] with 127.5. Intermediates stay
// allocated between calls (as the VM's pooled allocator keeps them); inputs and outputs are new tensors per call.
"use strict";

const WG = 64;
/** A kernel as TVM writes one for WebGPU: storage buffers, then a uniform of the scalars and the packed grid x. */
function wgsl(name, buffers, scalars, body) {
  const bindings = buffers.map(([buf, access], i) =>
    `@group(0) @binding(${i}) var<storage, ${access}> ${buf} : array<f32>;`).join("\n");
  return `${bindings}
struct PODArgs { ${scalars.map(([n, t]) => `${n} : ${t}, `).join("")}packGridDimX : u32 }
@group(0) @binding(${buffers.length}) var<uniform> podArgs : PODArgs;
@compute @workgroup_size(${WG}, 1, 1)
fn ${name}(@builtin(workgroup_id) b : vec3<u32>, @builtin(num_workgroups) nb : vec3<u32>,
    @builtin(local_invocation_id) t : vec3<u32>) {
  let i = i32((b.z * nb.x + b.x) * ${WG}u + t.x);
  if (i < podArgs.n) { ${body} }
}`;
}
const KERNELS = {
  fill: { arg_types: ["handle", "int32", "float32"], tags: ["paramWriteAccess:[1]"],
    code: wgsl("fill", [["out", "read_write"]], [["n", "i32"], ["value", "f32"]], "out[i] = podArgs.value;") },
  scale: { arg_types: ["handle", "handle", "int32", "float32"], tags: ["paramWriteAccess:[1,0]"],
    code: wgsl("scale", [["out", "read_write"], ["x", "read"]], [["n", "i32"], ["factor", "f32"]],
      "out[i] = x[i] * podArgs.factor;") },
  add: { arg_types: ["handle", "handle", "handle", "int32"], tags: ["paramWriteAccess:[1,0,0]"],
    code: wgsl("add", [["out", "read_write"], ["a", "read"], ["b2", "read"]], [["n", "i32"]],
      "out[i] = a[i] + b2[i];") },
};
const FINFO = Object.fromEntries(Object.entries(KERNELS).map(([name, k]) =>
  [name, { name, arg_types: k.arg_types, launch_param_tags: ["blockIdx.x", "threadIdx.x", ...k.tags] }]));

/**
 * The launch and buffer management of tvmjs 0.26's WebGPUContext, in small: the "plain path". Unbatched, that of
 * tvmjs 0.21: no pending encoder and no flushCommands; each dispatch and copy within the GPU is submitted at once.
 */
class WebGPUContext {
  constructor(device, batched = true) {
    this.device = device;
    this.bufferTable = [undefined];
    if (batched) this.pendingEncoder = null;
    else this.flushCommands = undefined;
    this.pendingReads = [];
    this.uniforms = [];
    this.pendingDispatchCount = 0;
  }

  flushCommands() {
    if (!this.pendingEncoder) return;
    this.device.queue.submit([this.pendingEncoder.finish()]);
    this.pendingEncoder = null;
    this.pendingDispatchCount = 0;
  }

  async sync() {
    this.flushCommands?.();
    const reads = this.pendingReads.splice(0);
    await Promise.all([...reads, this.device.queue.onSubmittedWorkDone()]);
  }

  createShader(finfo, code) { return this.createShaderInternal(finfo, code, false); }
  createShaderAsync(finfo, code) { return this.createShaderInternal(finfo, code, true); }

  createShaderInternal(finfo, code, async) {
    const write = JSON.parse(finfo.launch_param_tags.find((t) => t.startsWith("paramWriteAccess:")).slice(17));
    const handles = finfo.arg_types.map((t, i) => (t === "handle" ? i : -1)).filter((i) => i >= 0);
    const pods = finfo.arg_types.map((t, i) => (t === "handle" ? -1 : i)).filter((i) => i >= 0);
    const entries = write.map((w, binding) => ({ binding, visibility: GPUShaderStage.COMPUTE,
      buffer: { type: w ? "storage" : "read-only-storage" } }));
    entries.push({ binding: entries.length, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } });
    const layout = this.device.createBindGroupLayout({ entries });
    const desc = { layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: this.device.createShaderModule({ code }), entryPoint: finfo.name } };
    const launch = (pipeline) => (...args) => {
      const blocks = args[finfo.arg_types.length];
      let x = blocks;
      let z = 1;
      while (x >= 1 << 16) { x = Math.ceil(x / 2); z *= 2; }
      const scalars = new Int32Array(pods.length + 1);
      pods.forEach((argIndex, i) => {
        if (finfo.arg_types[argIndex].startsWith("float")) new Float32Array(scalars.buffer)[i] = args[argIndex];
        else scalars[i] = args[argIndex];
      });
      new Uint32Array(scalars.buffer)[pods.length] = blocks;
      const slot = this.pendingDispatchCount++;
      this.uniforms[slot] ??= this.device.createBuffer({ size: 256,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      this.device.queue.writeBuffer(this.uniforms[slot], 0, scalars.buffer);
      const encoder = this.encoder();
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, this.device.createBindGroup({ layout, entries: [
        ...handles.map((argIndex, binding) => ({ binding, resource: { buffer: this.gpuBufferFromPtr(args[argIndex]) } })),
        { binding: handles.length, resource: { buffer: this.uniforms[slot], size: scalars.byteLength } }] }));
      pass.dispatchWorkgroups(x, 1, z);
      pass.end();
      this.submitUnbatched(encoder);
    };
    return async ? this.device.createComputePipelineAsync(desc).then(launch)
      : launch(this.device.createComputePipeline(desc));
  }

  gpuBufferFromPtr(ptr) {
    const buffer = this.bufferTable[ptr];
    if (!buffer) throw new Error(`no GPU buffer ${ptr}`);
    return buffer;
  }

  deviceAllocDataSpace(nbytes) {
    this.bufferTable.push(this.device.createBuffer({ size: Math.max(4, Math.ceil(nbytes / 4) * 4),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }));
    return this.bufferTable.length - 1;
  }

  deviceFreeDataSpace(ptr) {
    const buffer = this.gpuBufferFromPtr(ptr);
    this.bufferTable[ptr] = undefined;
    this.flushCommands?.();
    buffer.destroy();
  }

  deviceCopyToGPU(bytes, ptr) {
    this.flushCommands?.();
    const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
    padded.set(bytes);
    this.device.queue.writeBuffer(this.gpuBufferFromPtr(ptr), 0, padded);
  }

  deviceCopyFromGPU(ptr, nbytes, onData) {
    this.flushCommands?.();
    const size = Math.ceil(nbytes / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(this.gpuBufferFromPtr(ptr), 0, staging, 0, size);
    this.device.queue.submit([encoder.finish()]);
    this.pendingReads.push(staging.mapAsync(GPUMapMode.READ).then(() => {
      onData(new Uint8Array(staging.getMappedRange(0, size).slice(0, nbytes)));
      staging.destroy();
    }));
  }

  deviceCopyWithinGPU(from, fromOffset, to, toOffset, nbytes) {
    const encoder = this.encoder();
    encoder.copyBufferToBuffer(this.gpuBufferFromPtr(from), fromOffset, this.gpuBufferFromPtr(to), toOffset, nbytes);
    this.submitUnbatched(encoder);
  }

  encoder() {
    if (!("pendingEncoder" in this)) return this.device.createCommandEncoder();
    return (this.pendingEncoder ??= this.device.createCommandEncoder());
  }

  submitUnbatched(encoder) {
    if (!("pendingEncoder" in this)) this.device.queue.submit([encoder.finish()]);
  }
}

function instantiate(batched = true) {
  const lib = { webGPUContext: undefined };
  const scopes = [[]];
  const kernels = {}; // name -> launch function (asyncLoadWebGPUPipelines' prebuilt ones, else made on first use)
  const kernel = (name) => (kernels[name] ??= lib.webGPUContext.createShader(FINFO[name], KERNELS[name].code));
  const size = (shape) => shape.reduce((a, b) => a * b, 1);
  const webgpu = { kind: "webgpu", sync: () => lib.webGPUContext.sync() };
  const cpu = { kind: "cpu" };
  const tensor = (shape, dtype, dev, ptr = null) => {
    const t = { shape: Array.from(shape), dtype, dev, data: null, ptr, detached: ptr !== null,
      copyFromRawBytes(bytes) {
        if (dev.kind === "webgpu") lib.webGPUContext.deviceCopyToGPU(bytes, this.ptr);
        else this.data = new Uint8Array(bytes);
        return this;
      },
      copyFrom(other) {
        this.shape = other.shape;
        this.dtype = other.dtype;
        lib.webGPUContext.deviceCopyFromGPU(other.ptr, 4 * size(other.shape), (d) => { this.data = d; });
        return this;
      },
      toRawBytes() { return this.data; },
    };
    if (dev.kind === "webgpu" && ptr === null) {
      t.ptr = lib.webGPUContext.deviceAllocDataSpace(4 * size(t.shape));
      scopes.at(-1).push(t);
    }
    return t;
  };
  const pooled = {}; // name and size -> ptr, kept between calls
  const storage = (name, n) => (pooled[`${name}:${n}`] ??= lib.webGPUContext.deviceAllocDataSpace(4 * n));
  const filled = (shape, value) => {
    const out = tensor(shape, "float32", webgpu);
    kernel("fill")(out.ptr, size(shape), value, Math.ceil(size(shape) / WG), WG);
    return out;
  };
  const functions = {
    clip: () => filled([2, 77, 8], 0),
    unet: (latents) => {
      const n = size(latents.shape);
      const [t, sum, copy] = ["t", "sum", "copy"].map((name) => storage(name, n));
      kernel("scale")(t, latents.ptr, n, 0.25, Math.ceil(n / WG), WG);
      kernel("add")(sum, t, t, n, Math.ceil(n / WG), WG);
      lib.webGPUContext.deviceCopyWithinGPU(sum, 0, copy, 0, 4 * n);
      const out = tensor(latents.shape, "float32", webgpu);
      kernel("scale")(out.ptr, copy, n, 1.0, Math.ceil(n / WG), WG);
      return out;
    },
    vae: (latents) => filled([1, 8 * latents.shape[2], 8 * latents.shape[3], 3], 127.5),
  };
  return {
    lib,
    initWebGPU(device) { lib.webGPUContext = new WebGPUContext(device, batched); },
    systemLib: () => ({}),
    async asyncLoadWebGPUPipelines() {
      for (const [name, finfo] of Object.entries(FINFO)) {
        kernels[name] = await lib.webGPUContext.createShaderAsync(finfo, KERNELS[name].code);
      }
    },
    webgpu: () => webgpu,
    cpu: () => cpu,
    empty: (shape, dtype, dev) => tensor(shape, dtype, dev),
    tensorCacheUpdate: (name, arr) => { arr.detached = true; },
    beginScope() { scopes.push([]); },
    endScope() {
      for (const t of scopes.pop()) if (!t.detached) lib.webGPUContext.deviceFreeDataSpace(t.ptr);
    },
    detachFromCurrentScope: (x) => { x.detached = true; return x; },
    createVirtualMachine: () => ({ getFunction: (name) => (...args) => functions[name](...args) }),
    getParamsFromCacheByName: (names) => names,
  };
}

module.exports = { instantiate: async () => instantiate(), createPolyfillWASI: () => ({}), FINFO, KERNELS,
  instantiateUnbatched: async () => instantiate(false) }; // tvmjs 0.21's launch, for web/test/launch.test.mjs
