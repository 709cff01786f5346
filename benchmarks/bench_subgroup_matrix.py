"""The subgroup-matrix matmul kernels (pipeline/webgpu/subgroup_matrix.py) against the default kernels TVM builds for
the same matmul (dlight's Matmul rule as the compile tiles it), one kernel at a time on this machine's WebGPU adapter
(Dawn in Node, tests/node/run_wgsl.mjs), on SD v1.5 UNet's matmul shapes at 512x512 (batch 2: guidance).

    .venv/bin/python benchmarks/bench_subgroup_matrix.py --profile nvidia --node node   # the H200 (gpu_bundle.sh)
    .venv/bin/python benchmarks/bench_subgroup_matrix.py --profile lavapipe --node .venv/lavapipe-sm/bin/node --quick

A GPU machine without TVM runs kernels built here: ``--write-kernels F`` builds every kernel into F and stops;
``--kernels F`` runs them without TVM. ``WEBSD_BUNDLE_SM_KERNELS=nvidia benchmarks/gpu_bundle.sh pack ...`` puts
such a file in the bundle, and ``gpu_bundle.sh run`` then runs this benchmark before bench_webgpu.py.

Prints and writes benchmarks/results/subgroup-matrix-gemm-<profile>.{json,md}: per shape the milliseconds per
dispatch (wall time of --repeat back-to-back dispatches in one pass), TFLOP/s against the float16 tensor-core peak and
the FP32 peak, and the largest difference between the two kernels' outputs. The commit and each WGSL's sha256 are
recorded, so a stale figure shows.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ort_peer import commit as commit_id  # noqa: E402
from pipeline.webgpu import subgroup_matrix as sm  # noqa: E402

# (rows, columns, reduction) of SD v1.5's UNet Linear layers at 512x512, batch 2 (tokens x features); the Linear
# reads its weight (n, k) in place
UNET_SHAPES = [(8192, 320, 320), (8192, 2560, 320), (8192, 320, 1280), (2048, 640, 640), (2048, 5120, 640),
               (2048, 640, 2560), (512, 1280, 1280), (512, 10240, 1280), (512, 1280, 5120)]
QUICK_SHAPES = [(256, 64, 64), (128, 128, 256)]
PEAKS = {"f16_tensor_tflops": 989.0, "fp32_tflops": 67.0}  # H200 (SXM) dense


def default_kernel(gemm: sm.Gemm):
    """TVM's own WebGPU kernel for the matmul, scheduled by the compile's dlight rules: (wgsl, entry, grid)."""
    import tvm
    from tvm import te

    from pipeline.toolchain import tvm_api
    from pipeline.webgpu import build as webgpu_build
    from pipeline.webgpu import inspection, kernels

    a = te.placeholder((gemm.batch, gemm.m, gemm.k), "float16", name="A")
    b = te.placeholder((gemm.n, gemm.k), "float16", name="B")
    r = te.reduce_axis((0, gemm.k), "r")
    c = te.compute((gemm.batch, gemm.m, gemm.n), lambda bi, i, j: te.sum(
        a[bi, i, r].astype("float32") * b[j, r].astype("float32"), axis=r), name="C")
    mod = tvm.IRModule({"dlight_gemm": te.create_prim_func([a, b, c]).with_attr("global_symbol", "dlight_gemm")})
    tgt = webgpu_build.target()
    with tgt:
        mod = tvm_api.dlight().ApplyDefaultSchedule(*kernels.schedule_rules())(mod)
    source = inspection.webgpu_source(tvm.compile(mod, target=tgt))
    entry = "dlight_gemm_kernel"
    return sm.split_kernels(source)[entry], entry, inspection.launch_grids(mod)["dlight_gemm"]


def subgroup_matrix_kernel(gemm: sm.Gemm, profile: sm.MatrixProfile):
    import tvm

    from pipeline.webgpu import build as webgpu_build
    from pipeline.webgpu import inspection

    block = sm.block_of(gemm, profile)
    func = sm.gemm_twin(gemm, profile, block).with_attr("global_symbol", gemm.name)
    source = inspection.webgpu_source(tvm.compile(tvm.IRModule({gemm.name: func}), target=webgpu_build.target()))
    entry = f"{gemm.name}_kernel"
    return sm.gemm_wgsl(gemm, profile, block, sm.split_kernels(source)[entry]), entry, (*sm.grid(gemm, profile, block), 1)


def run_kernel(node: str, work: Path, wgsl: str, entry: str, grid, a: Path, b: Path, out_bytes: int, repeat: int,
               toggles: list[str], features: list[str]) -> tuple[float, np.ndarray]:
    out = work / f"{entry}.out"
    spec = {"wgsl": wgsl, "entry": entry, "grid": list(grid), "features": features, "dawnToggles": toggles,
            "inputs": {"A_ptr": str(a), "B_ptr": str(b)}, "outputs": {"C_ptr": [str(out), out_bytes]}, "repeat": repeat}
    spec_path = work / f"{entry}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([node, str(ROOT / "tests" / "node" / "run_wgsl.mjs"), str(spec_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"{entry} failed: {proc.stderr[-1500:]}")
    ms = float(next(line for line in proc.stdout.splitlines() if line.startswith("timing:")).split()[1])
    return ms, np.fromfile(out, "float32")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(sm.PROFILES), default="nvidia")
    ap.add_argument("--node", default="node")
    ap.add_argument("--dawn-feature", action="append", default=[],
                    help="more Dawn toggles (allow_unsafe_apis is always on: the feature needs it)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="two small shapes (a software driver)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--write-kernels", type=Path, help="build every kernel into this JSON file and stop")
    ap.add_argument("--kernels", type=Path, help="run the kernels of this file (--write-kernels) instead of building")
    args = ap.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else UNET_SHAPES
    if args.write_kernels:
        built = {f"{m}x{n}x{k}": {label: dict(zip(("wgsl", "entry", "grid"), make(sm.Gemm(1, m, n, k, b_transposed=True))))
                                  for label, make in (("default", default_kernel), ("subgroup_matrix", lambda g:
                                                      subgroup_matrix_kernel(g, sm.PROFILES[args.profile])))}
                 for m, n, k in shapes}
        args.write_kernels.write_text(json.dumps({"profile": args.profile, "commit": commit_id(), "kernels": built}))
        print(f"wrote {len(built)} shapes' kernels to {args.write_kernels}")
        return 0
    prebuilt = json.loads(args.kernels.read_text()) if args.kernels else None
    if prebuilt:
        args.profile = prebuilt["profile"]
    profile = sm.PROFILES[args.profile]
    commit = prebuilt["commit"] if prebuilt else commit_id()
    toggles = ["allow_unsafe_apis", *args.dawn_feature]
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for m, n, k in ([tuple(int(x) for x in key.split("x")) for key in prebuilt["kernels"]] if prebuilt
                        else shapes):
            gemm = sm.Gemm(1, m, n, k, b_transposed=True)
            a, b = work / "a.bin", work / "b.bin"
            (rng.standard_normal((m, k)) * 0.5).astype("float16").tofile(a)
            (rng.standard_normal((n, k)) * 0.5).astype("float16").tofile(b)
            flops = 2.0 * m * n * k
            row = {"m": m, "n": n, "k": k, "gflop": round(flops / 1e9, 3)}
            outs = {}
            if prebuilt:
                made = {label: tuple(k[f] for f in ("wgsl", "entry", "grid"))
                        for label, k in prebuilt["kernels"][f"{m}x{n}x{k}"].items()}
            else:
                made = {"default": default_kernel(gemm), "subgroup_matrix": subgroup_matrix_kernel(gemm, profile)}
            for label, (wgsl, entry, grid), features in (
                    ("default", made["default"], ["shader-f16"]),
                    ("subgroup_matrix", made["subgroup_matrix"], ["shader-f16", sm.FEATURE])):
                ms, outs[label] = run_kernel(args.node, work, wgsl, entry, grid, a, b, m * n * 4, args.repeat,
                                             toggles, features)
                tflops = flops / (ms / 1e3) / 1e12
                row[label] = {"ms": round(ms, 4), "tflops": round(tflops, 2),
                              "of_f16_tensor_peak": round(tflops / PEAKS["f16_tensor_tflops"], 4),
                              "of_fp32_peak": round(tflops / PEAKS["fp32_tflops"], 4),
                              "wgsl_sha256": hashlib.sha256(wgsl.encode()).hexdigest()}
            row["max_abs_diff"] = float(np.abs(outs["default"] - outs["subgroup_matrix"]).max())
            row["speedup"] = round(row["default"]["ms"] / row["subgroup_matrix"]["ms"], 2)
            rows.append(row)
            print(f"{m}x{n}x{k}: default {row['default']['ms']:.3f} ms ({row['default']['tflops']} TFLOP/s), "
                  f"subgroup-matrix {row['subgroup_matrix']['ms']:.3f} ms ({row['subgroup_matrix']['tflops']} "
                  f"TFLOP/s), {row['speedup']}x, max abs diff {row['max_abs_diff']:.2e}", flush=True)
    report = {"commit": commit, "profile": args.profile, "matrix": profile.requires(), "dawn_toggles": toggles,
              "repeat": args.repeat, "peaks_if_h200": PEAKS, "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"subgroup-matrix-gemm-{args.profile}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [f"### Subgroup-matrix matmul vs TVM's default kernel ({args.profile} profile; commit {report['commit']})",
             "", "| m x n x k | default ms | TFLOP/s | subgroup-matrix ms | TFLOP/s | of f16 tensor peak | speedup |"
             " max abs diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['m']}x{r['n']}x{r['k']} | {r['default']['ms']} | {r['default']['tflops']} | "
              f"{r['subgroup_matrix']['ms']} | {r['subgroup_matrix']['tflops']} | "
              f"{r['subgroup_matrix']['of_f16_tensor_peak']:.1%} | {r['speedup']}x | {r['max_abs_diff']:.2e} |"
              for r in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
