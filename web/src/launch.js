// The page's own kernel launch path: it takes over tvmjs' shader launch (WebGPUContext.createShader and
// createShaderAsync) so that a call's dispatches are recorded once and replayed.
//
// tvmjs (0.21 and 0.26 alike) pays per dispatch: a bind group, a queue.writeBuffer of the scalar arguments into a
// uniform buffer and a compute pass of its own (0.21: a submit too). Shapes are static, so the same kernel sees the
// same buffers and the same scalars on every call. Here:
//   * scalars (the POD arguments and the packed grid size tvmjs appends) live in immutable slots of a few uniform
//     pages, addressed by their bytes and bound with a dynamic offset: written once, the first time those bytes
//     are seen, never again (no per-dispatch writes, and no slot a queued dispatch reads is ever overwritten);
//   * bind groups are kept by (kernel, buffers, uniform page): created once, replayed on every later call, and
//     dropped when one of their buffers is freed;
//   * every dispatch goes into one open compute pass, ended only when tvmjs touches the queue or its own encoder
//     (a copy, a write, a readback, a free, a sync), so a call is one pass between its uploads and its readback
//     (more where the VM copies within the GPU between kernels). WebGPU orders the dispatches of a pass (each is its own usage scope), so results are the same.
// Immediates (`maxImmediateSize`) would need TVM's WGSL rewritten (var<immediate>); dynamic offsets need no shader
// change, so the WGSL the build produced is the WGSL that runs.
//
// Why a page-owned wrapper and not a patch to TVM's web runtime: CI has no TVM source, so only JS the page owns can
// be exercised there (the runner on lavapipe with the stand-in tvmjs, tests/web/fake_tvmjs.cjs); the same module
// covers 0.21 and 0.26 (it uses only what both WebGPUContexts have), and a tvmjs rebuild is not needed to change
// it. The cost: it relies on tvmjs' internal names (lib.webGPUContext, gpuBufferFromPtr, the device API methods);
// where they are missing it leaves tvmjs' own launch in place and says so.
//
// Where its assumptions fail it falls back to tvmjs' own launch (the plain path), saying so once: scalars that
// keep changing (a dynamic shape: more distinct scalar sets than maxSlots) or buffers that keep changing (more
// live bind groups than maxBindGroups). A buffer that changes between calls (a fresh input tensor) is only a bind
// group created again: correct, and counted in `stats.bindGroupsCreated`.

import { PageError } from "./gpu.js";

export const LAUNCH_MODES = ["replay", "plain"];
/**
 * What the loader installs (the runner's --launch sets the mode; a page may too, before loading). The caps bound
 * what replay keeps: distinct scalar argument sets (4 MiB of uniform pages at a 256-byte stride) and live bind
 * groups (an SD v1.5 UNet call has ~1.8k dispatches); past either, the plain path takes over.
 */
export const launchSettings = { mode: "replay", log: (msg) => console.log(msg), maxSlots: 16384,
  maxBindGroups: 65536 };
const PAGE_BYTES = 64 << 10;
// the WebGPUContext methods that submit, write, read or free: our open pass is ended (flush()) first, to keep order
const QUEUE_METHODS = ["flushCommands", "sync", "copyRawBytesToBuffer", "drawImageFromBuffer", "clearCanvas",
  "deviceCopyToGPU", "deviceCopyFromGPU", "deviceCopyWithinGPU", "deviceFreeDataSpace", "dispose"];

/**
 * Install the launch path `settings.mode` names on a tvmjs Instance, after initWebGPU and before its pipelines
 * are loaded. Returns the ReplayLauncher (its `stats` are what the runner reports), or null for "plain".
 */
export function installLaunch(tvm, settings = launchSettings) {
  if (!LAUNCH_MODES.includes(settings.mode)) {
    throw new Error(`unknown launch mode "${settings.mode}": use one of ${LAUNCH_MODES.join(", ")}`);
  }
  if (settings.mode === "plain") return null;
  const ctx = tvm.lib?.webGPUContext;
  const missing = ["createShader", "createShaderAsync", "gpuBufferFromPtr", "deviceFreeDataSpace"]
    .filter((m) => typeof ctx?.[m] !== "function");
  if (missing.length) {
    settings.log(`launch: this tvmjs has no ${ctx ? missing.join(", ") : "lib.webGPUContext"}; ` +
      "keeping tvmjs' own kernel launch");
    return null;
  }
  return new ReplayLauncher(ctx, { ...launchSettings, ...settings });
}

/**
 * Replace the WGSL of the named kernels (a variant's kernels file: {entry-point name: WGSL}) in the shaders tvmjs
 * creates from now on: wraps the context's createShader(Async), whichever launch path installed them (call it
 * after installLaunch), so both paths build their module from the override and a replay fallback keeps it. The
 * override keeps the kernel's bindings and uniform (a drop-in shader swap). Returns {kernels, applied: Set of
 * names created from an override}; a tvmjs without a WebGPU context cannot take overrides: a PageError.
 */
export function installKernelOverrides(tvm, kernels, what = "the variant") {
  const ctx = tvm.lib?.webGPUContext;
  if (typeof ctx?.createShader !== "function" || typeof ctx?.createShaderAsync !== "function") {
    throw new PageError(`${what} replaces kernels, but this tvmjs has no webGPUContext.createShader(Async) to ` +
      "replace them in: load variant=default, or rebuild the site with a tvmjs that has them.");
  }
  const applied = new Set();
  const code = (finfo, wgsl) => {
    if (!Object.hasOwn(kernels, finfo.name)) return wgsl;
    applied.add(finfo.name);
    return kernels[finfo.name];
  };
  const [sync, async] = [ctx.createShader, ctx.createShaderAsync];
  ctx.createShader = (finfo, wgsl) => sync.call(ctx, finfo, code(finfo, wgsl));
  ctx.createShaderAsync = (finfo, wgsl) => async.call(ctx, finfo, code(finfo, wgsl));
  return { kernels: Object.keys(kernels), applied };
}

/** One compiled kernel, as tvmjs describes it (FunctionInfo: arg_types, launch_param_tags). */
function kernelLayout(finfo) {
  const dims = []; // the launch arguments' targets: 0-2 blockIdx.xyz, 3-5 threadIdx.xyz
  let writeAccess = [];
  for (const tag of finfo.launch_param_tags) {
    const axis = tag.charCodeAt(tag.length - 1) - "x".charCodeAt(0);
    if (tag.startsWith("blockIdx.")) dims.push(axis);
    else if (tag.startsWith("threadIdx.")) dims.push(axis + 3);
    else if (tag.startsWith("paramWriteAccess:")) writeAccess = JSON.parse(tag.slice("paramWriteAccess:".length));
    else throw new Error(`Cannot handle thread_axis ${tag}`);
  }
  const buffers = [];
  const pods = [];
  finfo.arg_types.forEach((dtype, i) => {
    if (dtype === "handle") buffers.push(i);
    else if (/^(u?int|float)/.test(dtype)) pods.push({ index: i, kind: dtype.startsWith("float") ? "f" : dtype[0] });
    else throw new Error(`Cannot handle argument type ${dtype} in WebGPU shader`);
  });
  if (writeAccess.length !== buffers.length) throw new Error(`${finfo.name}: paramWriteAccess does not match`);
  return { dims, buffers, pods, writeAccess };
}

export class ReplayLauncher {
  constructor(ctx, settings) {
    this.ctx = ctx;
    this.device = ctx.device;
    this.log = settings.log;
    this.maxSlots = settings.maxSlots;
    this.maxBindGroups = settings.maxBindGroups;
    this.stride = Math.max(256, this.device.limits?.minUniformBufferOffsetAlignment ?? 256);
    this.pages = [];
    this.pageUsed = PAGE_BYTES; // forces a page on the first slot
    this.slots = new Map(); // scalar bytes (as a string) -> {page, offset}
    this.bindGroups = new Map(); // kernel|page|buffer ids -> {group, ids}
    this.groupsOfBuffer = new Map(); // buffer id -> Set of bind group keys
    this.bufferIds = new WeakMap();
    this.nextBufferId = 1;
    this.nextKernelId = 1;
    // tvmjs >= 0.24 batches work in one pending encoder, submitted by flushCommands, which every queue method of
    // its context calls first: our pass goes into that encoder (a copy within the GPU then only ends the pass).
    // tvmjs 0.21 submits each dispatch and copy at once: our pass has an encoder of its own, submitted by flush().
    this.shared = "pendingEncoder" in ctx;
    this.encoder = null;
    this.pass = null;
    this.passPerDispatch = false; // the runner's --profile times passes: one per dispatch while it profiles
    this.fallback = null; // why the plain path took over, once it has
    this.stats = { launches: 0, plainLaunches: 0, bindGroupsCreated: 0, slotsWritten: 0, passes: 0, submits: 0 };
    this.original = {};
    for (const name of QUEUE_METHODS) {
      if (typeof ctx[name] !== "function") continue;
      const original = (this.original[name] = ctx[name]);
      ctx[name] = (...args) => {
        this.flush();
        if (name === "deviceFreeDataSpace") this.forgetBuffer(ctx.gpuBufferFromPtr(args[0]));
        return original.apply(ctx, args);
      };
    }
    this.original.createShader = ctx.createShader;
    ctx.createShader = (finfo, code) => this.createKernel(finfo, code, false);
    ctx.createShaderAsync = (finfo, code) => this.createKernel(finfo, code, true);
  }

  /** tvmjs' createShader(Async), with a bind group layout whose uniform takes a dynamic offset. */
  createKernel(finfo, code, async) {
    const layout = kernelLayout(finfo);
    const entries = layout.writeAccess.map((write, binding) => ({ binding, visibility: GPUShaderStage.COMPUTE,
      buffer: { type: write ? "storage" : "read-only-storage" } }));
    entries.push({ binding: entries.length, visibility: GPUShaderStage.COMPUTE,
      buffer: { type: "uniform", hasDynamicOffset: true } });
    const groupLayout = this.device.createBindGroupLayout({ entries });
    const pipelineLayout = this.device.createPipelineLayout({ bindGroupLayouts: [groupLayout] });
    const module = this.device.createShaderModule({ code,
      compilationHints: [{ entryPoint: finfo.name, layout: pipelineLayout }] });
    const desc = { layout: pipelineLayout, compute: { module, entryPoint: finfo.name } };
    const kernel = { ...layout, id: this.nextKernelId++, finfo, code, groupLayout, pipeline: null, plain: null,
      scalars: new Int32Array(layout.pods.length + 1) };
    const launch = (...args) => this.launch(kernel, args);
    if (!async) {
      kernel.pipeline = this.device.createComputePipeline(desc);
      return launch;
    }
    return this.device.createComputePipelineAsync(desc).then((p) => { kernel.pipeline = p; return launch; });
  }

  launch(k, args) {
    if (this.fallback) return this.launchPlain(k, args);
    const nArgs = k.buffers.length + k.pods.length;
    if (args.length !== nArgs + k.dims.length) throw new Error(`${k.finfo.name}: ${args.length} launch arguments`);
    const grid = [1, 1, 1, 1, 1, 1];
    k.dims.forEach((d, i) => { grid[d] = args[nArgs + i]; });
    if (grid[2] !== 1) throw new Error("WebGPU: blockIdx.z is reserved for internal use");
    // as tvmjs: a grid.x over 65535 spreads into z; the shader gets the real x size in the last scalar
    const packDimX = grid[0];
    let x = grid[0];
    let z = 1;
    while (x >= 1 << 16) {
      x = x % 2 === 0 ? x / 2 : (x + 1) / 2;
      z *= 2;
    }
    const s = k.scalars;
    const u32 = new Uint32Array(s.buffer);
    const f32 = new Float32Array(s.buffer);
    k.pods.forEach(({ index, kind }, i) => {
      if (kind === "f") f32[i] = args[index];
      else if (kind === "u") u32[i] = args[index];
      else s[i] = args[index];
    });
    u32[k.pods.length] = packDimX;
    const slot = this.slotFor(s);
    const ids = k.buffers.map((i) => this.bufferId(this.ctx.gpuBufferFromPtr(args[i])));
    const group = slot && this.bindGroupFor(k, slot, ids, args);
    if (!group) return this.launchPlain(k, args); // a cap was hit just now
    const pass = this.openPass();
    pass.setPipeline(k.pipeline);
    pass.setBindGroup(0, group, [slot.offset]);
    pass.dispatchWorkgroups(x, grid[1], z);
    if (this.passPerDispatch) this.endPass();
    this.stats.launches += 1;
    if (typeof this.ctx.shaderSubmitCounter === "number") this.ctx.shaderSubmitCounter += 1;
  }

  /** tvmjs' own launch of this kernel (its pipeline is created on first use), after our pass is submitted. */
  launchPlain(k, args) {
    this.flush();
    k.plain ??= this.original.createShader.call(this.ctx, k.finfo, k.code);
    this.stats.plainLaunches += 1;
    return k.plain(...args);
  }

  fallBack(reason) {
    this.fallback = reason;
    this.log(`launch: falling back to tvmjs' own kernel launch: ${reason}`);
    return null;
  }

  slotFor(scalars) {
    const key = scalars.join(",");
    let slot = this.slots.get(key);
    if (slot) return slot;
    if (this.slots.size >= this.maxSlots) {
      return this.fallBack(`more than ${this.maxSlots} distinct scalar argument sets (a dynamic shape?)`);
    }
    if (this.pageUsed + this.stride > PAGE_BYTES) {
      this.pages.push(this.device.createBuffer({ size: PAGE_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }));
      this.pageUsed = 0;
    }
    slot = { page: this.pages.length - 1, offset: this.pageUsed };
    this.pageUsed += this.stride;
    // a new slot: no queued dispatch reads it yet, so writing it now cannot reorder anything
    this.device.queue.writeBuffer(this.pages[slot.page], slot.offset, scalars.buffer, 0, scalars.byteLength);
    this.stats.slotsWritten += 1;
    this.slots.set(key, slot);
    return slot;
  }

  bindGroupFor(k, slot, ids, args) {
    const key = `${k.id}|${slot.page}|${ids.join(",")}`;
    const known = this.bindGroups.get(key);
    if (known) return known.group;
    if (this.bindGroups.size >= this.maxBindGroups) {
      return this.fallBack(`more than ${this.maxBindGroups} live bind groups (buffers keep changing between calls)`);
    }
    const entries = k.buffers.map((argIndex, binding) => ({ binding,
      resource: { buffer: this.ctx.gpuBufferFromPtr(args[argIndex]) } }));
    entries.push({ binding: entries.length,
      resource: { buffer: this.pages[slot.page], offset: 0, size: k.scalars.byteLength } });
    const group = this.device.createBindGroup({ layout: k.groupLayout, entries });
    this.stats.bindGroupsCreated += 1;
    this.bindGroups.set(key, { group, ids });
    for (const id of ids) {
      if (!this.groupsOfBuffer.has(id)) this.groupsOfBuffer.set(id, new Set());
      this.groupsOfBuffer.get(id).add(key);
    }
    return group;
  }

  bufferId(buffer) {
    let id = this.bufferIds.get(buffer);
    if (id === undefined) this.bufferIds.set(buffer, (id = this.nextBufferId++));
    return id;
  }

  /** A freed buffer's bind groups go (its id is never reused: a new buffer gets a new id). */
  forgetBuffer(buffer) {
    const id = buffer && this.bufferIds.get(buffer);
    const keys = id && this.groupsOfBuffer.get(id);
    if (!keys) return;
    for (const key of keys) {
      for (const other of this.bindGroups.get(key)?.ids ?? []) {
        if (other !== id) this.groupsOfBuffer.get(other)?.delete(key);
      }
      this.bindGroups.delete(key);
    }
    this.groupsOfBuffer.delete(id);
  }

  openPass() {
    if (this.pass) return this.pass;
    if (this.shared) this.encoder = this.ctx.pendingEncoder ??= this.device.createCommandEncoder();
    else this.encoder ??= this.device.createCommandEncoder();
    this.pass = this.encoder.beginComputePass();
    this.stats.passes += 1;
    return this.pass;
  }

  endPass() {
    this.pass?.end();
    this.pass = null;
  }

  /** End the open pass; an encoder of our own is submitted too (a shared one is tvmjs' to submit). */
  flush() {
    this.endPass();
    if (this.shared || !this.encoder) return;
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.stats.submits += 1;
  }

  /** What the runner reports: counts so far, the live caches and the fallback (null while replaying). */
  report() {
    return { ...this.stats, liveBindGroups: this.bindGroups.size, scalarSlots: this.slots.size,
      fallback: this.fallback };
  }
}
