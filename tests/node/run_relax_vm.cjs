// Run a Relax VM function of a CPU (llvm wasm32) tvmjs .wasm in Node and print its output as JSON.
// Usage: node run_relax_vm.cjs <tvmjs.bundle.js> <model.wasm> <inputs.json> [function=main]
//   inputs.json: [{"shape": [4, 8], "dtype": "float32", "data": [...]}, ...]
// Prints {"shape": [...], "data": [...]}.
"use strict";
const fs = require("fs");
const path = require("path");

const [bundlePath, wasmPath, inputsPath, fname = "main"] = process.argv.slice(2);
const tvmjs = require(path.resolve(bundlePath));
const inputs = JSON.parse(fs.readFileSync(inputsPath, "utf8"));

const tvm = new tvmjs.Instance(new WebAssembly.Module(fs.readFileSync(wasmPath)), tvmjs.createPolyfillWASI());
tvm.beginScope();
const dev = tvm.cpu();
const vm = tvm.createVirtualMachine(dev);
const func = vm.getFunction(fname);
const args = inputs.map((x) => tvm.empty(x.shape, x.dtype, dev).copyFrom(x.data));
const out = func(...args);
console.log(JSON.stringify({ shape: out.shape, data: Array.from(out.toArray()) }));
tvm.endScope();
