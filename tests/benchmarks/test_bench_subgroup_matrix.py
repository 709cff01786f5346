"""benchmarks/bench_subgroup_matrix.py end to end on Mesa 26's lavapipe, the way gpu_bundle.sh runs it on a GPU
machine: the kernels built into a file here (``--write-kernels``), then timed from that file without TVM
(``--kernels``). Its figures on lavapipe say nothing about a GPU; this checks that the H200 run will not fail."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, runner_env  # tests/conftest.py

BENCH = ROOT / "benchmarks" / "bench_subgroup_matrix.py"


def test_the_benchmark_runs_from_a_kernels_file(node_sm, tmp_path):
    kernels = tmp_path / "sm-kernels.json"
    built = subprocess.run([sys.executable, str(BENCH), "--profile", "lavapipe", "--quick", "--sweep",
                            "--write-kernels", str(kernels)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    run = subprocess.run([sys.executable, str(BENCH), "--kernels", str(kernels), "--node", node_sm, "--repeat", "1",
                          "--results", str(tmp_path / "results")], cwd=ROOT, env=runner_env(), capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "subgroup-matrix-kernels-lavapipe-quick.json").read_text())
    kinds = {row["op"].split()[0] for row in report["rows"]}
    assert kinds == {"matmul", "conv3x3", "attention"}, kinds
    for row in report["rows"]:
        # the two kernels of an op agree (float16 outputs: a float16 step or two), and each is recorded by its hash
        assert row["max_abs_diff"] < (5e-3 if row["op"].startswith(("conv", "attention")) else 1e-3), row
        assert row["default"]["wgsl_sha256"] != row["subgroup_matrix"]["wgsl_sha256"]
        assert row["subgroup_matrix"]["ms"] > 0
        # --sweep (with --quick: the first op of each kind): every other block or tiling computes it too
        assert all(s["max_abs_diff"] < 5e-3 for s in row.get("sweep", {}).values()), row
    assert [row["op"].split()[0] for row in report["rows"] if len(row.get("sweep", {})) >= 2] == [
        "matmul", "conv3x3", "attention"]
    # a convolution's reduction in parts too: its partial sums, added up, agree with the convolution
    conv = next(row for row in report["rows"] if row["op"].startswith("conv3x3"))
    assert any(label.endswith("split k 2") for label in conv["sweep"]), conv["sweep"].keys()
    assert report["matrix"]["subgroup_matrix_configs"][0]["M"] == 8


def test_ops_keeps_the_named_ops_and_a_typo_is_one_line(tmp_path):
    kernels = tmp_path / "sm-kernels.json"
    built = subprocess.run([sys.executable, str(BENCH), "--profile", "lavapipe", "--quick", "--write-kernels",
                            str(kernels), "--ops", "matmul 256x", "--ops", "conv3x3"], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    assert [c["key"] for c in json.loads(kernels.read_text())["cases"]] == ["matmul 256x64x64",
                                                                            "conv3x3 1x16x16x16->16"]
    typo = subprocess.run([sys.executable, str(BENCH), "--profile", "lavapipe", "--quick", "--write-kernels",
                           str(tmp_path / "none.json"), "--ops", "matmull"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert typo.returncode != 0 and "--ops 'matmull' matches no op" in typo.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "none.json").exists()
