// Runs one WGSL compute kernel that TVM generated, on whatever adapter Dawn finds (lavapipe in the tests), on a
// device with WebGPU's DEFAULT limits (a kernel over them fails its pipeline creation), and writes its outputs.
//
//   node tests/node/run_wgsl.mjs spec.json
//   spec: {wgsl, entry, grid: [x, y, z], features: ["shader-f16"], inputs: {name: file}, outputs: {name: [file, bytes]},
//          dawnToggles: ["allow_unsafe_apis"] (optional: Dawn offers chromium-experimental-subgroup-matrix only with it),
//          repeat: n (optional: then time at least n more dispatches, and 200 ms of them, in one pass and print
//          "timing: <ms per dispatch>")}
//   or a batch on one device: {features, dawnToggles, runs: [spec, ...]} (each run's own features and toggles are
//   ignored; one "timing:" line per timed run, in order), so a benchmark pays Dawn's start once, not per kernel.
// Buffers are bound by the names TVM's WGSL gives them (`@binding(i) var<storage, ...> q_ptr`); TVM's uniform
// (`podArgs.packGridDimX`, tvmjs sets it to the grid's x) is bound where the WGSL declares it.
import { readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const { create, globals } = await import(
  pathToFileURL(createRequire(path.join(root, "web", "package.json")).resolve("webgpu")).href);
Object.assign(globalThis, globals);

const spec = JSON.parse(await readFile(process.argv[2], "utf8"));
// kept: Dawn's instance must outlive the device
const gpu = create(spec.dawnToggles?.length ? [`enable-dawn-features=${spec.dawnToggles.join(",")}`] : []);
const adapter = await gpu.requestAdapter();
if (!adapter) throw new Error("no WebGPU adapter");
const device = await adapter.requestDevice({ requiredFeatures: spec.features ?? [] }); // default limits
/** Compile, bind, dispatch (and with `repeat` time) one kernel on `device` and write its outputs: false on a
 * WebGPU error (printed). */
async function run(spec) {
  const errors = [];
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: spec.wgsl });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: spec.entry } });

  const entries = [];
  const outputs = [];
  for (const m of spec.wgsl.matchAll(/@binding\((\d+)\) var<(storage|uniform)[^>]*> (\w+)/g)) {
    const [, binding, kind, name] = m;
    let buffer;
    if (kind === "uniform") {
      buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(buffer, 0, new Uint32Array([spec.grid[0], 0, 0, 0]));
    } else if (name in spec.inputs) {
      const data = await readFile(spec.inputs[name]);
      buffer = device.createBuffer({ size: Math.ceil(data.byteLength / 4) * 4,
                                     usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(buffer, 0, data, 0, data.byteLength - (data.byteLength % 4));
    } else if (name in spec.outputs) {
      const [file, bytes] = spec.outputs[name];
      buffer = device.createBuffer({ size: Math.ceil(bytes / 4) * 4,
                                     usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      outputs.push({ file, bytes, buffer });
    } else {
      throw new Error(`the spec gives no buffer for binding ${binding} (${name})`);
    }
    entries.push({ binding: Number(binding), resource: { buffer } });
  }
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(...spec.grid);
  pass.end();
  const reads = outputs.map(({ bytes, buffer }) => {
    const read = device.createBuffer({ size: buffer.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(buffer, 0, read, 0, buffer.size);
    return read;
  });
  device.queue.submit([encoder.finish()]);
  const error = await device.popErrorScope();
  if (error) errors.push(error.message);
  if (errors.length) {
    console.error(`WebGPU error: ${errors.join("; ")}`);
    return false;
  }
  if (spec.repeat) {  // wall time of back-to-back dispatches after the first, from submit to done
    await device.queue.onSubmittedWorkDone(); // the first dispatch is not timed
    // at least `repeat`, and enough for 200 ms: on the H100 the same kernel read up to 1.8x apart in batches of a
    // few ms (Node's Dawn learns of finished work by polling)
    let count = spec.repeat;
    for (;;) {
      const timed = device.createCommandEncoder();
      const p = timed.beginComputePass();
      p.setPipeline(pipeline);
      p.setBindGroup(0, bindGroup);
      for (let i = 0; i < count; i++) p.dispatchWorkgroups(...spec.grid);
      p.end();
      const start = performance.now();
      device.queue.submit([timed.finish()]);
      await device.queue.onSubmittedWorkDone();
      const ms = performance.now() - start;
      if (ms >= 200 || count >= 5000) {
        console.log(`timing: ${(ms / count).toFixed(6)}`);
        break;
      }
      count = Math.min(5000, Math.ceil(count * 250 / Math.max(ms, 1)));
    }
  }
  for (let i = 0; i < outputs.length; i++) {
    await reads[i].mapAsync(GPUMapMode.READ);
    await writeFile(outputs[i].file, new Uint8Array(reads[i].getMappedRange().slice(0, outputs[i].bytes)));
  }
  for (const buffer of [...entries.map((e) => e.resource.buffer), ...reads]) buffer.destroy(); // a batch runs on
  console.log(`ran ${spec.entry} on ${(adapter.info ?? {}).description ?? "an adapter"}, grid ${spec.grid}`);
  return true;
}

for (const one of spec.runs ?? [spec]) {
  if (!(await run(one))) process.exit(1);
}
process.exit(0);
