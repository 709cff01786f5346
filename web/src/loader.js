// Loading the model: manifest.json, every file checked against the sha256 and size the manifest lists
// (a missing, truncated or altered shard stops the page with a message, it never reaches the GPU), one
// tvmjs Instance per submodel on the shared GPUDevice, and its weights put into that instance's tensor cache.

import { PageError } from "./gpu.js";
import { installKernelOverrides, installLaunch } from "./launch.js";
import { ClipTokenizer } from "./tokenizer.js";

const REQUIRED_FIELDS = ["latent_width", "latent_height", "latent_channels", "max_length", "submodels", "scheduler", "tokenizer",
  "files"];
export const SUBMODELS = ["clip", "unet", "vae"];

/** Fetch and check manifest.json. `files` maps each path (relative to the manifest) to {sha256, bytes}. */
export async function loadManifest(url, fetchFn = fetch) {
  let res;
  try {
    res = await fetchFn(url, { cache: "no-store" });
  } catch (err) {
    throw new PageError(`Cannot fetch ${url}: ${err.message ?? err}`);
  }
  if (!res.ok) throw new PageError(`Cannot load ${url} (HTTP ${res.status}): build the site with \`doit site\`.`);
  let manifest;
  try {
    manifest = await res.json();
  } catch (err) {
    throw new PageError(`${url} is not valid JSON: ${err.message}`);
  }
  const missing = REQUIRED_FIELDS.filter((k) => manifest[k] === undefined);
  for (const sub of SUBMODELS) {
    for (const k of ["wasm", "params", "function"]) {
      if (manifest.submodels?.[sub]?.[k] === undefined) missing.push(`submodels.${sub}.${k}`);
    }
  }
  if (missing.length) {
    throw new PageError(`${url} lacks ${missing.join(", ")}: rebuild the site with \`doit site\`.`);
  }
  return manifest;
}

/** Paths (keys of manifest.files) of the tokenizer files the page reads. */
export function tokenizerPaths(manifest) {
  const tok = manifest.tokenizer;
  const dir = tok.vocab.slice(0, tok.vocab.lastIndexOf("/") + 1);
  return { json: tok.json ?? `${dir}tokenizer.json`, config: tok.config ?? `${dir}tokenizer_config.json` };
}

/**
 * The page's CLIP tokenizer, from the verified tokenizer.json and tokenizer_config.json.
 * @param {{get(path: string, onBytes?: Function): Promise<Uint8Array>}} source where verified files come from
 *   (weight_cache.js ModelFiles: the cache, else the network)
 */
export async function loadTokenizer(manifest, source, progress) {
  const paths = tokenizerPaths(manifest);
  progress.setStage("tokenizer");
  const read = async (path) => JSON.parse(new TextDecoder().decode(await source.get(path, progress.fileCallback())));
  return new ClipTokenizer(await read(paths.json), await read(paths.config));
}

/** Every file a page load fetches (tokenizer, each submodel's wasm and weights): the progress bar's total. */
export function filesToFetch(manifest) {
  const { json, config } = tokenizerPaths(manifest);
  return [json, config, ...SUBMODELS.flatMap((name) => submodelFiles(manifest, name))];
}

/** The files one submodel loads: its .wasm (and a variant's kernels file), its tensor-cache.json and shards. */
export function submodelFiles(manifest, name) {
  const sub = manifest.submodels[name];
  const dir = sub.params.endsWith("/") ? sub.params : `${sub.params}/`;
  return [sub.wasm, ...(sub.kernels ? [sub.kernels] : []), ...Object.keys(manifest.files).filter((p) => p.startsWith(dir))];
}

function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Fetch one model file and check it against the manifest before anything uses it.
 * @param {URL|string} baseUrl the manifest's URL (paths are relative to it)
 * @param {string} path a key of manifest.files
 * @param {object} files manifest.files
 * @param {(bytes: number) => void} onBytes called with the bytes received so far in this file
 * @returns {Promise<Uint8Array>}
 */
export async function fetchVerified(baseUrl, path, files, onBytes = () => {}, fetchFn = fetch) {
  const entry = files[path];
  if (!entry) throw new PageError(`model/${path} is not listed in manifest.json "files": rebuild the site.`);
  const url = new URL(path, baseUrl).href;
  let res;
  try {
    res = await fetchFn(url);
  } catch (err) {
    throw new PageError(`Cannot fetch model/${path}: ${err.message ?? err}`);
  }
  if (!res.ok) {
    throw new PageError(`model/${path} is missing (HTTP ${res.status}); the model files are incomplete: ` +
      "rebuild the site.");
  }
  const data = new Uint8Array(entry.bytes);
  let received = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (received + value.length > data.length) {
      await reader.cancel();
      throw new PageError(`model/${path} is larger than the ${entry.bytes} bytes manifest.json lists: the file ` +
        "was changed or replaced; rebuild the site.");
    }
    data.set(value, received);
    received += value.length;
    onBytes(received);
  }
  return verifyBytes(path, entry, data.subarray(0, received));
}

/** Check a file's bytes against its manifest entry {sha256, bytes}: returns them, or throws a PageError. */
export async function verifyBytes(path, entry, data) {
  if (data.length !== entry.bytes) {
    throw new PageError(`model/${path} has ${data.length} bytes, manifest.json lists ${entry.bytes}: the file is ` +
      "truncated or was changed; rebuild the site.");
  }
  const digest = toHex(await crypto.subtle.digest("SHA-256", data));
  if (digest !== entry.sha256) {
    throw new PageError(`model/${path} is corrupt: its sha256 is ${digest}, manifest.json lists ${entry.sha256}; ` +
      "rebuild the site.");
  }
  return data;
}

/** Progress over all files of a load: bytes done / total, plus the current stage text. */
export class Progress {
  constructor(totalBytes, onChange = () => {}) {
    this.totalBytes = totalBytes;
    this.doneBytes = 0;
    this.stage = "";
    this.onChange = onChange;
  }

  setStage(stage) {
    this.stage = stage;
    this.onChange(this);
  }

  /** A per-file byte callback that adds to the overall count. */
  fileCallback() {
    let last = 0;
    return (received) => {
      this.doneBytes += received - last;
      last = received;
      this.onChange(this);
    };
  }
}

/** A variant's kernels file (verified bytes): {kernel entry-point name: WGSL}, or a PageError. */
function readKernels(path, bytes) {
  let kernels;
  try {
    kernels = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new PageError(`model/${path} is not valid JSON (${err.message}): rebuild the site.`);
  }
  const ok = kernels && typeof kernels === "object" && !Array.isArray(kernels) &&
    Object.values(kernels).every((code) => typeof code === "string");
  if (!ok) throw new PageError(`model/${path} is not a {kernel name: WGSL} object: rebuild the site.`);
  return kernels;
}

/** Decode float16 bits into a Float32Array. */
export function float16ToFloat32(bits) {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * 2 ** -14 * (frac / 1024);
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return out;
}

/** Decode a tensor-cache "f32-to-bf16" record: bfloat16 bits are the high half of float32. */
function bf16BytesToFloat32(bytes) {
  const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  return new Float32Array(out.buffer);
}

const DTYPE_BYTES = { float32: 4, float16: 2, int32: 4, uint32: 4, int8: 1, uint8: 1 };

/**
 * One compiled submodel (clip, unet or vae): its own tvmjs Instance and VM on the shared GPUDevice.
 * `call(inputs)` uploads host arrays, runs the Relax function with the weights as the last argument, and reads
 * the result back, so the submodels exchange plain typed arrays (each instance has its own memory).
 */
export class TvmSubmodel {
  constructor(name, tvm, vm, fn, params) {
    this.name = name;
    this.tvm = tvm;
    this.vm = vm; // kept: the function belongs to it
    this.fn = fn;
    this.params = params;
    this.device = tvm.webgpu();
  }

  /**
   * Load a submodel: instantiate its wasm, compile its shaders, upload its verified weights.
   * @param {object} tvmjs the global of tvmjs.bundle.js
   * @param {GPUDevice} gpuDevice
   * @param {string} name "clip" | "unet" | "vae"
   * @param {object} manifest
   * @param {{get(path: string, onBytes?: Function): Promise<Uint8Array>}} source verified files (ModelFiles)
   * @param {Progress} progress
   */
  static async load(tvmjs, gpuDevice, name, manifest, source, progress) {
    const sub = manifest.submodels[name];
    // where the load's time goes (ms): fetching + checking files, creating shader pipelines, uploading weights
    const times = { download: 0, pipelines: 0, upload: 0 };
    const timed = async (phase, action) => {
      const start = performance.now();
      try {
        return await action();
      } finally {
        times[phase] += performance.now() - start;
      }
    };
    const get = (path) => timed("download", () => source.get(path, progress.fileCallback()));

    progress.setStage(`${name}: downloading ${sub.wasm}`);
    const wasm = await get(sub.wasm);
    const kernels = sub.kernels ? readKernels(sub.kernels, await get(sub.kernels)) : null;
    const logger = (msg) => console.log(`[${name}] ${msg}`);
    const tvm = await tvmjs.instantiate(wasm.buffer, tvmjs.createPolyfillWASI(), logger);
    tvm.initWebGPU(gpuDevice);
    const launcher = installLaunch(tvm); // the page's own kernel launch (launch.js), before any shader exists
    // a variant's WGSL in place of its module's (manifest.variants, variants.js), on whichever launch path
    const overrides = kernels ? installKernelOverrides(tvm, kernels, `${name} of variant ${manifest.variant}`) : null;
    // Every TVM object a call returns belongs to the innermost scope; what we keep is detached from it.
    tvm.beginScope();
    try {
      progress.setStage(`${name}: compiling GPU shaders`);
      // the shaders compile (createComputePipelineAsync) while the weights download; awaited before the VM
      const pipelines = timed("pipelines", () => tvm.asyncLoadWebGPUPipelines(tvm.systemLib()));
      pipelines.catch(() => {}); // a failed download may throw first; the failure is reported by the await below

      const paramsDir = sub.params.endsWith("/") ? sub.params : `${sub.params}/`;
      const cacheJson = JSON.parse(new TextDecoder().decode(await get(`${paramsDir}tensor-cache.json`)));
      const names = [];
      for (const shard of cacheJson.records) {
        progress.setStage(`${name}: downloading weights ${shard.dataPath}`);
        const bytes = await get(`${paramsDir}${shard.dataPath}`);
        progress.setStage(`${name}: uploading weights ${shard.dataPath} to the GPU`);
        await timed("upload", async () => {
          for (const rec of shard.records) {
            uploadRecord(tvm, rec, bytes, shard.dataPath);
            names.push(rec.name);
          }
          await tvm.webgpu().sync();
        });
      }
      // The function takes its weights in parameter order (metadata.param_names, written by the shard stage).
      // Record order differs from it: TVM's writer puts each large tensor in a shard of its own.
      const order = cacheJson.metadata?.param_names ?? names;
      const unknown = order.filter((n) => !names.includes(n));
      if (unknown.length || order.length !== names.length) {
        throw new PageError(`${paramsDir}tensor-cache.json: metadata.param_names does not match its records ` +
          `(${unknown[0] ?? `${order.length} names, ${names.length} records`}); rebuild the site.`);
      }
      await pipelines;
      const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(tvm.webgpu()));
      const fn = tvm.detachFromCurrentScope(vm.getFunction(sub.function));
      const params = tvm.detachFromCurrentScope(tvm.getParamsFromCacheByName(order));
      const model = new TvmSubmodel(name, tvm, vm, fn, params);
      model.loadTimes = times;
      model.launcher = launcher;
      // counted as the shaders are created: TVM 0.26's tvmjs creates them all at load, 0.21's one per module at
      // load and the rest at their first call (its webgpu.get_fmap lists one imported module's kernels)
      Object.defineProperty(model, "kernelOverrides", { enumerable: true, get: () => (overrides ? {
        kernels: overrides.kernels.length, applied: overrides.applied.size,
        unused: overrides.kernels.filter((k) => !overrides.applied.has(k)) } : null) });
      model.overrideLog = overrides ? logger : null; // checked after the first call (call())
      return model;
    } finally {
      tvm.endScope();
    }
  }

  /**
   * Run the function on host arrays.
   * @param {Array<{data: Float32Array|Int32Array|Uint16Array, shape: number[], dtype: string}>} inputs
   * @returns {Promise<{data: Float32Array, shape: number[]}>}
   */
  async call(inputs) {
    const tvm = this.tvm;
    tvm.beginScope();
    try {
      const args = inputs.map(({ data, shape, dtype }) => {
        const t = tvm.empty(shape, dtype, this.device);
        t.copyFromRawBytes(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        return t;
      });
      let out = this.fn(...args, this.params);
      if (typeof out.get === "function") out = out.get(0); // a one-element tuple
      const host = tvm.empty(out.shape, out.dtype, tvm.cpu());
      host.copyFrom(out);
      await this.device.sync();
      // after the first call every shader exists (TVM 0.21's tvmjs creates most then): an override no kernel took
      // means the variant's files do not match the module (that speed-up is lost)
      if (this.overrideLog) {
        const { unused } = this.kernelOverrides;
        if (unused.length) this.overrideLog(`kernel overrides no kernel took: ${unused}`);
        this.overrideLog = null;
      }
      const raw = host.toRawBytes();
      const data = out.dtype === "float16"
        ? float16ToFloat32(new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2))
        : new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
      return { data: Float32Array.from(data), shape: Array.from(out.shape, Number) };
    } finally {
      tvm.endScope();
    }
  }
}

/** Copy one tensor-cache record from a verified shard into the instance's tensor cache, on the GPU. */
export function uploadRecord(tvm, rec, shardBytes, shardName) {
  const size = rec.shape.reduce((a, b) => a * b, 1);
  const bytesPerElem = DTYPE_BYTES[rec.dtype];
  if (bytesPerElem === undefined) throw new PageError(`weight ${rec.name}: unsupported dtype ${rec.dtype}`);
  if (rec.byteOffset + rec.nbytes > shardBytes.length) {
    throw new PageError(`weight ${rec.name} lies outside ${shardName}: tensor-cache.json does not match its shards`);
  }
  let bytes = shardBytes.subarray(rec.byteOffset, rec.byteOffset + rec.nbytes);
  if (rec.format === "f32-to-bf16" && rec.dtype === "float32") {
    bytes = new Uint8Array(bf16BytesToFloat32(bytes.slice()).buffer);
  } else if (rec.format !== "raw") {
    throw new PageError(`weight ${rec.name}: unsupported tensor-cache format ${rec.format}`);
  }
  if (bytes.length !== size * bytesPerElem) {
    throw new PageError(`weight ${rec.name}: ${bytes.length} bytes for shape [${rec.shape}] ${rec.dtype}`);
  }
  tvm.beginScope();
  const arr = tvm.empty(rec.shape, rec.dtype, tvm.webgpu());
  arr.copyFromRawBytes(bytes);
  // tvmjs >= 0.22 names it tensorCacheUpdate; TVM v0.21's tvmjs ndarrayCacheUpdate (same arguments)
  if (typeof tvm.tensorCacheUpdate === "function") tvm.tensorCacheUpdate(rec.name, arr, false);
  else tvm.ndarrayCacheUpdate(rec.name, arr, false);
  tvm.endScope();
}

/**
 * Load every submodel at once. The loads overlap: one submodel's download and sha256 check run while another's
 * shaders compile (createComputePipelineAsync) and a third's weights upload, so the page is ready sooner than
 * loading them one after another (benchmarks/results/webgpu-sd15-random-h200.md measures both).
 * @returns {Promise<Object<string, TvmSubmodel>>} by submodel name
 */
export async function loadSubmodels(tvmjs, gpuDevice, manifest, source, progress,
  { serial = false, names = SUBMODELS } = {}) {
  const load = (name) => TvmSubmodel.load(tvmjs, gpuDevice, name, manifest, source, progress);
  if (serial) {  // one after another: only to measure what the overlap saves (the runner's --serial-load)
    const models = {};
    for (const name of names) models[name] = await load(name);
    return models;
  }
  const loaded = await Promise.all(names.map(load));
  return Object.fromEntries(names.map((name, i) => [name, loaded[i]]));
}

