// Per-kernel GPU time for the headless runner (`--profile`), from WebGPU timestamp queries: every compute pass
// tvmjs begins (one per kernel launch) gets timestampWrites, and each pass is named by the entry point of the
// pipeline it sets. Opt-in and measured in a run of its own: resolving the queries after every call adds work.

const SLOTS = 2048; // passes per collect: WebGPU allows 4096 queries per set (an SD v1.5 UNet call has ~1.4k)

/**
 * Patch the WebGPU prototypes (Dawn's globals) so that passes on `device` are timed. Call before the model loads
 * (pipeline names are recorded at creation). Returns { useDevice(device), collect(label), report() }: a later load
 * makes a new device (the runner's returning visit), and the queries must be on the device that runs the passes.
 */
export function installKernelProfiler(device, globals) {
  const { GPUDevice, GPUCommandEncoder, GPUComputePassEncoder } = globals;
  const names = new WeakMap(); // pipeline -> entry point
  const passSlot = new WeakMap(); // pass -> slot
  const slotName = [];
  let querySet, resolve, read;
  const useDevice = (d) => {
    device = d;
    querySet = device.createQuerySet({ type: "timestamp", count: 2 * SLOTS });
    resolve = device.createBuffer({ size: 16 * SLOTS, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    read = device.createBuffer({ size: 16 * SLOTS, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    slotName.length = 0;
  };
  useDevice(device);
  const totals = {}; // label -> kernel -> {calls, ns}
  let enabled = false;

  for (const method of ["createComputePipeline", "createComputePipelineAsync"]) {
    const original = GPUDevice.prototype[method];
    GPUDevice.prototype[method] = function (desc) {
      const result = original.call(this, desc);
      const tag = (p) => { names.set(p, desc?.compute?.entryPoint ?? "?"); return p; };
      return result instanceof Promise ? result.then(tag) : tag(result);
    };
  }
  const beginComputePass = GPUCommandEncoder.prototype.beginComputePass;
  GPUCommandEncoder.prototype.beginComputePass = function (desc = {}) {
    if (!enabled || slotName.length >= SLOTS) return beginComputePass.call(this, desc);
    const slot = slotName.length;
    slotName.push("?");
    const pass = beginComputePass.call(this, { ...desc, timestampWrites: {
      querySet, beginningOfPassWriteIndex: 2 * slot, endOfPassWriteIndex: 2 * slot + 1 } });
    passSlot.set(pass, slot);
    return pass;
  };
  const setPipeline = GPUComputePassEncoder.prototype.setPipeline;
  GPUComputePassEncoder.prototype.setPipeline = function (pipeline) {
    if (passSlot.has(this)) slotName[passSlot.get(this)] = names.get(pipeline) ?? "?";
    return setPipeline.call(this, pipeline);
  };

  return {
    useDevice,
    set enabled(on) { enabled = on; },
    /** Attribute the passes since the last collect to `label` (call after the work has been submitted). */
    async collect(label) {
      const n = slotName.length;
      if (!n) return;
      const encoder = device.createCommandEncoder();
      encoder.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
      encoder.copyBufferToBuffer(resolve, 0, read, 0, 16 * n);
      device.queue.submit([encoder.finish()]);
      await read.mapAsync(GPUMapMode.READ, 0, 16 * n);
      const stamps = new BigUint64Array(read.getMappedRange(0, 16 * n).slice(0));
      read.unmap();
      const byKernel = (totals[label] ??= {});
      for (let i = 0; i < n; i++) {
        const entry = (byKernel[slotName[i]] ??= { calls: 0, ns: 0 });
        entry.calls += 1;
        entry.ns += Number(stamps[2 * i + 1] - stamps[2 * i]);
      }
      slotName.length = 0;
    },
    /** {label: {total_ms, kernels: [{kernel, calls, ms, share}] (largest first)}} */
    report() {
      return Object.fromEntries(Object.entries(totals).map(([label, byKernel]) => {
        const total = Object.values(byKernel).reduce((s, e) => s + e.ns, 0);
        const kernels = Object.entries(byKernel).map(([kernel, e]) => ({ kernel, calls: e.calls,
          ms: Number((e.ns / 1e6).toFixed(3)), share: Number((e.ns / Math.max(total, 1)).toFixed(4)) }))
          .sort((a, b) => b.ms - a.ms);
        return [label, { total_ms: Number((total / 1e6).toFixed(3)), kernels }];
      }));
    },
  };
}

/**
 * Count what the page asks of WebGPU (always on in the runner; a counter per call costs nothing measurable):
 * kernel dispatches, bind groups created, compute passes, queue submits, host-to-GPU writes and GPU-to-host reads
 * (mapAsync). Returns { snapshot() } with the running totals.
 */
export function installCallCounter(globals) {
  const { GPUDevice, GPUCommandEncoder, GPUQueue, GPUComputePassEncoder, GPUBuffer } = globals;
  const counts = { dispatches: 0, bind_groups: 0, passes: 0, submits: 0, writes: 0, reads: 0 };
  const wrap = (proto, method, key) => {
    const original = proto[method];
    proto[method] = function (...args) {
      counts[key] += 1;
      return original.apply(this, args);
    };
  };
  wrap(GPUComputePassEncoder.prototype, "dispatchWorkgroups", "dispatches");
  wrap(GPUDevice.prototype, "createBindGroup", "bind_groups");
  wrap(GPUCommandEncoder.prototype, "beginComputePass", "passes");
  wrap(GPUQueue.prototype, "submit", "submits");
  wrap(GPUQueue.prototype, "writeBuffer", "writes");
  wrap(GPUBuffer.prototype, "mapAsync", "reads");
  return { snapshot: () => ({ ...counts }) };
}
