"""The subgroup-matrix matmul, convolution and attention kernels (pipeline/webgpu/subgroup_matrix/) against the
default kernels the compile builds for the same op (dlight's Matmul rule as the compile tiles it; for attention, the
fused kernel of pipeline/webgpu/flash_attention.py), one kernel at a time on this machine's WebGPU adapter (Dawn in
Node, tests/node/run_wgsl.mjs): SD v1.5 UNet's Linear layers at 512x512 (batch 2: guidance), its 3x3 convolutions
and attention layers, SD-Turbo's largest attention, and the VAE decoder's convolutions (SD-Turbo's too) and the two
matmuls of its attention at 512x512.
An attention's FLOPs are Q K^T and P V once (the subgroup-matrix kernel in two passes computes Q K^T twice: its
module doc says why). Where the build zero pads an attention's head dim for the subgroup-matrix kernel (SD v1.5's
40 to 48), that kernel runs on padded copies of the inputs, as in the build (the pad and the slice are not timed),
and its FLOPs are still the unpadded op's.

    .venv/bin/python benchmarks/bench_subgroup_matrix.py --profile nvidia --node node   # the H200 (gpu_bundle.sh)
    .venv/bin/python benchmarks/bench_subgroup_matrix.py --profile lavapipe --node .venv/lavapipe-sm/bin/node --quick

``--sweep`` also builds each op's kernel at every other block (tiling, for attention, each with its softmax
bookkeeping in both forms, ``attention_by_key``, in two passes and in one, ``attention_one_pass``) that fits, a
matmul's also staged on 2x2, 2x1 and 1x2 subgroups, a convolution's on 1, 2 and 4 subgroups, with its weights
staged and (on 4) with its gather prefetched, and in the build's layout with its reduction split in 2, 4 and 8
parts (the sum of the parts after it, a TVM kernel in the build, is not timed), and times them all: the data to
choose the profile's ``enough_workgroups``, ``gemm_subgroups``, ``conv_subgroups``, ``conv_staged``,
``conv_prefetch``, ``conv_split_workgroups``, ``attention_by_key``, ``attention_one_pass`` and the attention
tiling's ``REGISTERS`` by.

A GPU machine without TVM runs kernels built here: ``--write-kernels F`` builds every kernel into F and stops;
``--kernels F`` runs them without TVM. ``WEBSD_BUNDLE_SM_KERNELS=nvidia benchmarks/gpu_bundle.sh pack ...`` puts
such a file in the bundle, and ``gpu_bundle.sh run`` then runs this benchmark before bench_webgpu.py. ``--ops TEXT``
keeps the ops whose key contains TEXT (a sweep of every op does not fit one device call).

Prints and writes benchmarks/results/subgroup-matrix-kernels-<profile>.{json,md}: per op the milliseconds per
dispatch (wall time of back-to-back dispatches in one pass: at least --repeat, and 200 ms of them), TFLOP/s against
the float16 tensor-core peak and the FP32 peak, and the largest difference between the two kernels' outputs. The
commit and each WGSL's sha256 are recorded, so a stale figure shows.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from pipeline.fsutil import atomic_write, write_json  # noqa: E402
from pipeline.webgpu import subgroup_matrix as sm  # noqa: E402

# (rows, columns, reduction) of SD v1.5's UNet Linear layers at 512x512, batch 2 (tokens x features); the Linear
# reads its weight (n, k) in place
UNET_SHAPES = [(8192, 320, 320), (8192, 2560, 320), (8192, 320, 1280), (2048, 640, 640), (2048, 5120, 640),
               (2048, 640, 2560), (512, 1280, 1280), (512, 10240, 1280), (512, 1280, 5120),
               # the VAE's attention at 512x512 as split_single_head_attention builds it: Q K^T, then P V (here B
               # is read as an (n, k) weight; the build's is (k, n) with a batch axis of 1)
               (4096, 4096, 512), (4096, 512, 4096)]
QUICK_SHAPES = [(256, 64, 64), (128, 128, 256)]
# 3x3, padding 1: (batch, channels in, height, width, channels out); the UNet's at batch 2, the VAE decoder's largest
CONV_SHAPES = [(2, 320, 64, 64, 320), (2, 640, 32, 32, 640), (2, 1280, 16, 16, 1280), (2, 1280, 8, 8, 1280),
               (2, 2560, 8, 8, 1280), (1, 512, 64, 64, 512), (1, 512, 128, 128, 512), (1, 256, 256, 256, 256),
               (1, 128, 512, 512, 128)]
QUICK_CONVS = [(1, 16, 16, 16, 16)]
# (batch, heads, query tokens, key tokens, head dim): SD v1.5's self- and cross-attention at 512x512 (batch 2),
# SD-Turbo's (SD 2.x layout: head dim 64) at its largest resolution
ATTENTION_SHAPES = [(2, 8, 4096, 4096, 40), (2, 8, 4096, 77, 40), (2, 8, 1024, 1024, 80), (2, 8, 1024, 77, 80),
                    (2, 8, 256, 256, 160), (2, 8, 256, 77, 160), (1, 5, 4096, 4096, 64)]
QUICK_ATTENTIONS = [(1, 2, 32, 48, 16), (1, 2, 64, 13, 16), (1, 2, 32, 48, 12)]  # the last padded to 16
PEAKS = {"f16_tensor_tflops": 989.0, "fp32_tflops": 67.0}  # H200 (SXM) dense


def kernels_of(op, profile: sm.MatrixProfile) -> dict:
    """{"default": the compile's own kernel for a Gemm, Conv (dlight's rules) or Attention (the fused kernel),
    "subgroup_matrix": its override on the twin's grid}, each (wgsl, entry, grid)."""
    from tvm import te

    from pipeline.webgpu import build as webgpu_build
    from pipeline.webgpu import flash_attention

    if isinstance(op, sm.Attention):  # the subgroup-matrix kernel on the head dim the build pads to
        run = sm.attention.padded(op, profile)
        t = sm.tiling(run, profile)
        fused = flash_attention.attention_kernel(op.batch, op.heads, op.q_len, op.kv_len, op.head_dim, "float16",
                                                 op.scale)
        code, entry, grid = webgpu_build.single_kernel(sm.attention_twin(run, profile, t), run.name)
        return {"default": webgpu_build.single_kernel(fused, "fused_attention"),
                "subgroup_matrix": (sm.attention_wgsl(run, profile, t, code), entry, grid)}

    if isinstance(op, sm.Gemm):  # in the layout the build picks (gemm_layout)
        block, subgroups = sm.gemm_layout(op, profile)
        code, entry, grid = webgpu_build.single_kernel(sm.gemm_twin(op, profile, block, subgroups), op.name)
        kernel = (sm.gemm_wgsl(op, profile, block, code, subgroups), entry, grid)
    else:  # in the layout the build picks (conv_layout)
        code, entry, grid = webgpu_build.single_kernel(sm.conv_twin(op, profile, *sm.conv_layout(op, profile)),
                                                       op.name)
        kernel = (sm.conv.override(op, profile, code), entry, grid)
    to_te = sm.gemm_te if isinstance(op, sm.Gemm) else sm.conv_te
    default = webgpu_build.single_kernel(te.create_prim_func(list(to_te(op))), "dlight_op", default_schedule=True)
    return {"default": default, "subgroup_matrix": kernel}


def sweep_of(op, profile: sm.MatrixProfile) -> dict:
    """{label: (wgsl, entry, grid)}: the op's subgroup-matrix kernel at every block (rows x cols of result
    matrices) or attention tiling (rows, keys per block) that fits, beside the one the build picks."""
    from pipeline.webgpu import build as webgpu_build

    out = {}
    if isinstance(op, sm.Attention):  # each tiling in both forms of the softmax bookkeeping (attention_by_key),
        run = sm.attention.padded(op, profile)  # in two passes and in one (attention_one_pass)
        for t in sm.tilings(run, profile):
            code, entry, grid = webgpu_build.single_kernel(sm.attention_twin(run, profile, t), run.name)
            for by_key in (False, True):
                for one_pass in (False, True):
                    form = dataclasses.replace(profile, attention_by_key=by_key)
                    label = (f"rows {t.rows} keys {t.keys}" + (" by key" if by_key else "")
                             + (" one pass" if one_pass else ""))
                    out[label] = (sm.attention_wgsl(run, form, dataclasses.replace(t, one_pass=one_pass), code),
                                  entry, grid)
        return out
    if isinstance(op, sm.Gemm):  # the direct kernel at every block, the staged one at the larger blocks
        layouts = [((r, c), (1, 1)) for r in (4, 2, 1) for c in (4, 2, 1)]
        layouts += [(block, subgroups) for subgroups in ((2, 2), (2, 1), (1, 2))
                    for block in ((4, 4), (4, 2), (2, 4), (2, 2))]
        for (rows, cols), (down, across) in layouts:
            if (op.m % (down * rows * profile.m) or op.n % (across * cols * profile.n)
                    or not sm.gemm_depth(op, profile, (rows, cols), (down, across))):
                continue
            code, entry, grid = webgpu_build.single_kernel(sm.gemm_twin(op, profile, (rows, cols), (down, across)),
                                                           op.name)
            label = f"block {rows}x{cols}" + (f" staged on {down}x{across} subgroups" if down * across > 1 else "")
            out[label] = (sm.gemm_wgsl(op, profile, (rows, cols), code, (down, across)), entry, grid)
        return out
    # a convolution also on several subgroups sharing one gather (each its own rows), at the larger blocks with its
    # weights staged through workgroup memory, and on 4 subgroups with its gather prefetched into registers
    layouts = [(block, s, False) for s in (1, 2, 4) for block in [(r, c) for r in (4, 2, 1) for c in (4, 2, 1)]]
    layouts += [(block, s, True) for s in (1, 2, 4) for block in ((4, 4), (4, 2), (2, 4), (2, 2))]
    for block, s, staged in layouts:
        if op.gemm.m % (s * block[0] * profile.m) or op.gemm.n % (block[1] * profile.n):
            continue
        code, entry, grid = webgpu_build.single_kernel(sm.conv_twin(op, profile, block, s), op.name)
        for prefetch in (False, True) if s == 4 else (False,):
            label = (f"block {block[0]}x{block[1]}" + (f" x{s} subgroups" if s > 1 else "")
                     + (" staged weights" if staged else "") + (" prefetched gather" if prefetch else ""))
            out[label] = (sm.conv_wgsl(op, profile, block, code, s, staged, prefetch), entry, grid)
    # the build's layout with its reduction split in parts (conv_split_workgroups): float32 partial sums, which the
    # comparison adds up (the build's sum after the kernel is not timed)
    block, s = sm.conv_layout(op, profile)
    for splits in (2, 4, 8):
        part = dataclasses.replace(op, splits=splits, out_dtype="float32")
        if op.c % splits or part.part % profile.k:
            continue
        code, entry, grid = webgpu_build.single_kernel(sm.conv_twin(part, profile, block, s), part.name)
        out[f"block {block[0]}x{block[1]} x{s} subgroups split k {splits}"] = (
            sm.conv_wgsl(part, profile, block, code, s, sm.conv_staged(profile, block), profile.conv_prefetch), entry,
            grid, {"splits": splits, "dtype": "float32"})
    return out


def cases(quick: bool, profile: sm.MatrixProfile) -> list[dict]:
    """The ops measured: a key, the op (for building its kernels), its FLOPs, its inputs' shapes, its output size
    (an attention also the head dim its subgroup-matrix kernels run on)."""
    out = []
    for m, n, k in QUICK_SHAPES if quick else UNET_SHAPES:
        out.append({"key": f"matmul {m}x{n}x{k}", "op": ["gemm", [m, n, k]], "flops": 2.0 * m * n * k,
                    "inputs": {"A_ptr": [m, k], "B_ptr": [n, k]}, "out": m * n})
    for b, c, h, w, o in QUICK_CONVS if quick else CONV_SHAPES:  # with the cast to float16 after them, as built
        out.append({"key": f"conv3x3 {b}x{c}x{h}x{w}->{o}", "op": ["conv", [b, c, h, w, o]],
                    "flops": 2.0 * b * o * h * w * c * 9, "inputs": {"X_ptr": [b, c, h, w], "W_ptr": [o, c, 3, 3]},
                    "out": b * o * h * w, "out_dtype": "float16"})
    for b, h, q, kv, d in QUICK_ATTENTIONS if quick else ATTENTION_SHAPES:
        out.append({"key": f"attention {b}x{h}x{q}x{kv}x{d}", "op": ["attention", [b, h, q, kv, d]],
                    "flops": 4.0 * b * h * q * kv * d,
                    "inputs": {"q_ptr": [b, q, h, d], "k_ptr": [b, kv, h, d], "v_ptr": [b, kv, h, d]},
                    "out": b * q * h * d, "out_dtype": "float16", "output": "o_ptr",
                    "padded_dim": sm.attention.padded(sm.Attention(b, h, q, kv, d), profile).head_dim})
    return out


def build(case: dict, profile: sm.MatrixProfile, sweep: bool = False) -> dict:
    """{"default": (wgsl, entry, grid), "subgroup_matrix": (...)} of one case, and with ``sweep`` its "sweep"."""
    kind, dims = case["op"]
    if kind == "gemm":
        op = sm.Gemm(1, *dims, b_transposed=True)
    elif kind == "attention":
        op = sm.Attention(*dims)
    else:
        b, c, h, w, o = dims
        op = sm.Conv(b, c, h, w, o, 3, 3, 1, (1, 1, 1, 1), out_dtype="float16")
    return {**kernels_of(op, profile), **({"sweep": sweep_of(op, profile)} if sweep else {})}


def write_inputs(case: dict, work: Path, rng) -> tuple[dict[str, Path], dict[str, Path]]:
    """The op's random inputs as files: (the default kernel's, the subgroup-matrix kernels'), the latter zero padded
    copies where the case has a ``padded_dim``."""
    inputs, padded = {}, {}
    for name, shape in case["inputs"].items():
        x = (rng.standard_normal(shape) * 0.5).astype("float16")
        inputs[name] = padded[name] = work / f"{name}.bin"
        x.tofile(inputs[name])
        if case["op"][0] == "attention" and case["padded_dim"] != shape[-1]:
            padded[name] = work / f"{name}.padded.bin"
            np.pad(x, [(0, 0)] * 3 + [(0, case["padded_dim"] - shape[-1])]).tofile(padded[name])
    return inputs, padded


def run_kernels(node: str, work: Path, kernels: dict, inputs: tuple[dict, dict], case: dict, repeat: int,
                toggles: list[str]) -> dict[str, tuple[float, np.ndarray]]:
    """{label: (ms per dispatch, output)} of every kernel of one op ({label: (wgsl, entry, grid)}), all in one Node
    process on one device (run_wgsl.mjs's batch: Dawn starts once per op, not per kernel). ``inputs``: the default
    kernel's and the others' (``write_inputs``); an output on a padded head dim comes back sliced."""
    dtype = case.get("out_dtype", "float32")
    head_dim = case["inputs"]["q_ptr"][-1] if case["op"][0] == "attention" else None
    widths = [head_dim if label == "default" else case.get("padded_dim", head_dim) for label in kernels]
    # a kernel's own output where it differs from the op's: {"splits": partial sums, split first; "dtype": theirs}
    metas = [kernel[3] if len(kernel) > 3 else {} for kernel in kernels.values()]
    sizes = [case["out"] * meta.get("splits", 1) * np.dtype(meta.get("dtype", dtype)).itemsize for meta in metas]
    runs = [{"wgsl": wgsl, "entry": entry, "grid": list(grid),
             "inputs": {name: str(path) for name, path in inputs[label != "default"].items()},
             "outputs": {case.get("output", "C_ptr"): [str(work / f"{i}.out"),
                                                       size * width // head_dim if head_dim else size]},
             "repeat": repeat}
            for i, ((label, (wgsl, entry, grid, *_)), width, size) in enumerate(zip(kernels.items(), widths, sizes))]
    spec_path = work / "batch.json"
    features = ["shader-f16", "subgroups", sm.FEATURE]  # subgroups: kernels of several subgroups (--sweep)
    spec_path.write_text(json.dumps({"features": features, "dawnToggles": toggles, "runs": runs}))
    proc = subprocess.run([node, str(ROOT / "tests" / "node" / "run_wgsl.mjs"), str(spec_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(f"{case['key']} failed: {proc.stderr[-1500:]}")
    timings = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("timing:")]

    def output(i: int) -> np.ndarray:
        out = np.fromfile(work / f"{i}.out", metas[i].get("dtype", dtype))
        if metas[i].get("splits", 1) > 1:  # the partial sums added up, then the op's cast
            out = out.reshape(metas[i]["splits"], -1).sum(axis=0).astype(dtype)
        out = out.astype("float32")
        return out.reshape(-1, widths[i])[:, :head_dim].ravel() if head_dim else out

    return {label: (ms, output(i)) for i, (label, ms) in enumerate(zip(kernels, timings, strict=True))}


def write_report(rows: list[dict], args, profile: sm.MatrixProfile, commit: str, toggles: list[str]) -> Path:
    """benchmarks/results/subgroup-matrix-kernels-<profile>[-quick].{json,md} of the rows so far."""
    report = {"commit": commit, "profile": args.profile, "matrix": profile.requires(), "dawn_toggles": toggles,
              "repeat": args.repeat, "peaks_if_h200": PEAKS, "rows": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"subgroup-matrix-kernels-{args.profile}{'-quick' if args.quick else ''}"
    write_json(stem.with_suffix(".json"), report)
    lines = [f"### Subgroup-matrix kernels vs the default build's ({args.profile} profile; commit {commit})", "",
             "| op | GFLOP | default ms | TFLOP/s | subgroup-matrix ms | TFLOP/s | of f16 tensor peak | speedup |"
             " max abs diff |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['op']} | {r['gflop']} | {r['default']['ms']} | {r['default']['tflops']} | "
              f"{r['subgroup_matrix']['ms']} | {r['subgroup_matrix']['tflops']} | "
              f"{r['subgroup_matrix']['of_f16_tensor_peak']:.1%} | {r['speedup']}x | {r['max_abs_diff']:.2e} |"
              for r in rows]
    with_sweep = [r for r in rows if r.get("sweep")]
    if with_sweep:
        lines += ["", "Every block (rows x cols of result matrices per subgroup) or attention tiling (query-row "
                  "matrices, key matrices per block) that fits, beside the one the build picks (the table above):", "",
                  "| op | kernel | ms | TFLOP/s | max abs diff |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['op']} | {label} | {s['ms']} | {s['tflops']} | {s['max_abs_diff']:.2e} |"
                  for r in with_sweep for label, s in r["sweep"].items()]
    with atomic_write(stem.with_suffix(".md")) as f:
        f.write("\n".join(lines) + "\n")
    return stem


def swept(case: dict, todo: list[dict], args) -> bool:
    """Whether --sweep takes this case: every case, or with --quick (a software driver, slow) the first of its kind."""
    return args.sweep and (not args.quick or next(c for c in todo if c["op"][0] == case["op"][0]) is case)


def selected(todo: list[dict], ops: list[str]) -> list[dict]:
    """The cases whose key contains one of ``ops`` (all without any); an ``ops`` entry that matches none is an
    error, so a typo does not silently measure nothing."""
    for text in ops:
        if not any(text in case["key"] for case in todo):
            raise SystemExit(f"--ops {text!r} matches no op; the ops are: {', '.join(c['key'] for c in todo)}")
    return [case for case in todo if not ops or any(text in case["key"] for text in ops)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(sm.PROFILES), default="nvidia")
    ap.add_argument("--node", default="node")
    ap.add_argument("--dawn-feature", action="append", default=[],
                    help="more Dawn toggles (allow_unsafe_apis is always on: the feature needs it)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small shapes (a software driver); --sweep takes the first "
                    "op of each kind")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--write-kernels", type=Path, help="build every kernel into this JSON file and stop")
    ap.add_argument("--kernels", type=Path, help="run the kernels of this file (--write-kernels) instead of building")
    ap.add_argument("--sweep", action="store_true", help="also every other block / attention tiling of each op")
    ap.add_argument("--ops", action="append", default=[], metavar="TEXT",
                    help="only the ops whose key (e.g. 'conv3x3 2x320x64x64->320') contains TEXT; repeatable")
    args = ap.parse_args(argv)
    if args.write_kernels:
        todo = selected(cases(args.quick, sm.PROFILES[args.profile]), args.ops)
        for case in todo:
            case["kernels"] = build(case, sm.PROFILES[args.profile], swept(case, todo, args))
        args.write_kernels.write_text(json.dumps({"profile": args.profile, "commit": commit_id(), "quick": args.quick,
                                                  "cases": todo}))
        print(f"wrote the kernels of {len(todo)} ops to {args.write_kernels}")
        return 0
    prebuilt = json.loads(args.kernels.read_text()) if args.kernels else None
    if prebuilt:
        args.profile, args.quick = prebuilt["profile"], prebuilt["quick"]
    profile = sm.PROFILES[args.profile]
    commit = prebuilt["commit"] if prebuilt else commit_id()
    toggles = ["allow_unsafe_apis", *args.dawn_feature]
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        todo = selected(prebuilt["cases"] if prebuilt else cases(args.quick, profile), args.ops)
        for case in todo:
            kernels = case.get("kernels") or build(case, profile, swept(case, todo, args))
            inputs = write_inputs(case, work, rng)
            row = {"op": case["key"], "gflop": round(case["flops"] / 1e9, 3)}
            sweep = {f"sweep {label}": kernel for label, kernel in kernels.get("sweep", {}).items()}
            timed = run_kernels(args.node, work, {"default": kernels["default"],
                                                  "subgroup_matrix": kernels["subgroup_matrix"], **sweep},
                                inputs, case, args.repeat, toggles)
            for label in ("default", "subgroup_matrix"):
                ms = timed[label][0]
                tflops = case["flops"] / (ms / 1e3) / 1e12
                row[label] = {"ms": round(ms, 4), "tflops": round(tflops, 2),
                              "of_f16_tensor_peak": round(tflops / PEAKS["f16_tensor_tflops"], 4),
                              "of_fp32_peak": round(tflops / PEAKS["fp32_tflops"], 4),
                              "wgsl_sha256": hashlib.sha256(kernels[label][0].encode()).hexdigest()}
            reference = timed["default"][1]
            row["max_abs_diff"] = float(np.abs(reference - timed["subgroup_matrix"][1]).max())
            row["speedup"] = round(row["default"]["ms"] / row["subgroup_matrix"]["ms"], 2)
            for label, kernel in kernels.get("sweep", {}).items():
                ms, out = timed[f"sweep {label}"]
                row.setdefault("sweep", {})[label] = {
                    "ms": round(ms, 4), "tflops": round(case["flops"] / (ms / 1e3) / 1e12, 2),
                    "max_abs_diff": float(np.abs(reference - out).max()),
                    "wgsl_sha256": hashlib.sha256(kernel[0].encode()).hexdigest()}
                print(f"  {label}: {ms:.3f} ms ({row['sweep'][label]['tflops']} TFLOP/s), max abs diff "
                      f"{row['sweep'][label]['max_abs_diff']:.2e}", flush=True)
            rows.append(row)
            print(f"{case['key']}: default {row['default']['ms']:.3f} ms ({row['default']['tflops']} TFLOP/s), "
                  f"subgroup-matrix {row['subgroup_matrix']['ms']:.3f} ms ({row['subgroup_matrix']['tflops']} "
                  f"TFLOP/s), {row['speedup']}x, max abs diff {row['max_abs_diff']:.2e}", flush=True)
            write_report(rows, args, profile, commit, toggles)  # so far: a run cut short keeps what it measured
    stem = write_report(rows, args, profile, commit, toggles)
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
