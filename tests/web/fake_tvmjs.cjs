// A stand-in for tvmjs.bundle.js (CommonJS, as the runner loads it) for testing the headless runner's code path
// where no TVM source is available to build the real runtime (CI). It keeps tvmjs's API shape; each submodel's
// "function" returns fixed outputs: clip zeros [2, 77, 8], unet 0.5 * latents, vae 127.5 everywhere [1, 8h, 8w, 3].
// The GPUDevice it is given is real (Dawn): it makes one buffer per tensor upload so the device is exercised.
"use strict";

function instantiate() {
  let device = null;
  const bytesOf = { float32: 4, int32: 4, float16: 2 };
  const tensor = (shape, dtype, data = null) => ({
    shape, dtype, data,
    copyFromRawBytes(b) {
      this.data = new Uint8Array(b);
      if (device) {
        const buf = device.createBuffer({ size: Math.max(4, Math.ceil(b.byteLength / 4) * 4),
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
        device.queue.writeBuffer(buf, 0, this.data.buffer, this.data.byteOffset, b.byteLength & ~3);
        buf.destroy();
      }
      return this;
    },
    copyFrom(other) { this.data = other.data; this.shape = other.shape; this.dtype = other.dtype; return this; },
    toRawBytes() { return this.data; },
  });
  const out = (shape, value) => tensor(shape, "float32",
    new Uint8Array(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value).buffer));
  const functions = {
    clip: () => out([2, 77, 8], 0),
    unet: (latents) => {
      const x = new Float32Array(latents.data.buffer.slice(latents.data.byteOffset,
        latents.data.byteOffset + latents.data.byteLength));
      return tensor(latents.shape, "float32", new Uint8Array(x.map((v) => 0.5 * v).buffer));
    },
    vae: (latents) => out([1, 8 * latents.shape[2], 8 * latents.shape[3], 3], 127.5),
  };
  return {
    initWebGPU(d) { device = d; },
    systemLib: () => ({}),
    asyncLoadWebGPUPipelines: async () => {},
    webgpu: () => ({ sync: async () => device && device.queue.onSubmittedWorkDone() }),
    cpu: () => ({}),
    empty: (shape, dtype) => tensor(Array.from(shape), dtype),
    tensorCacheUpdate: () => {},
    beginScope() {}, endScope() {},
    detachFromCurrentScope: (x) => x,
    createVirtualMachine: () => ({ getFunction: (name) => (...args) => functions[name](...args) }),
    getParamsFromCacheByName: (names) => names,
  };
}

module.exports = { instantiate: async () => instantiate(), createPolyfillWASI: () => ({}) };
