"""Incrementality of the model stages through the real ``doit`` on the tiny model (issue 3).

Each scenario changes one input and asserts the exact set of tasks doit executed, read from doit's own output
(``.  task`` ran, ``-- task`` up to date). The scenarios edit pipeline code, so doit runs in a copy of the project
(dodo.py, pyproject.toml, pipeline/, web/) in tmp_path: doit puts the dodo's directory first on ``sys.path`` and the
stages run ``python -m pipeline.run_stage`` from there, so the copy's ``pipeline`` is the one that runs (checked).
The scenarios share one build and run in an order where each starts from an up-to-date tree.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, real_env, run_doit  # tests/conftest.py (pytest puts tests/ on sys.path)

from tests.fixtures import make_fake_tvm

pytestmark = pytest.mark.slow

SUBS = ("clip", "unet", "vae")
# the UNet wrapper edit: the same values through another graph op (a real graph change, still one input per kernel)
UNET_EDIT = ("latents.expand(2, -1, -1, -1)", "latents.repeat(2, 1, 1, 1)")
# fields of the JSON artifacts that record how long something took (everything else is reproducible)
TIMING_FIELDS = {"seconds", "import_seconds"}
TVM = "v0.26.0"  # the default tvm.version's directory key (pipeline.layout.tvm_key)


def tasks(stages: str, subs=SUBS) -> set[str]:
    return {f"{stage}_{sub}" for stage in stages.split() for sub in subs}


def copy_project(dest: Path) -> Path:
    """The files a doit run reads, copied so that a test may edit them; web/node_modules is shared (symlink)."""
    dest.mkdir(parents=True)
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "node_modules")
    shutil.copytree(ROOT / "pipeline", dest / "pipeline", ignore=ignore)
    shutil.copytree(ROOT / "web", dest / "web", ignore=ignore)
    if (ROOT / "web" / "node_modules").exists():
        (dest / "web" / "node_modules").symlink_to(ROOT / "web" / "node_modules")
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path} no longer contains {old!r} once: update this test's edit"
    path.write_text(text.replace(old, new))


def _without_timings(data):
    if isinstance(data, dict):
        return {k: _without_timings(v) for k, v in data.items() if k not in TIMING_FIELDS}
    if isinstance(data, list):
        return [_without_timings(v) for v in data]
    return data


def artifacts(cache: Path, dtype: str = "float32", subs=SUBS) -> dict[str, str]:
    """sha256 of every model-stage artifact of ``subs`` (JSON reports without their timing fields).

    All of them are byte-reproducible for the same inputs: the trace (.pt2 and .json), the compiled .webgpu.tar
    (mtime-0 tar) and .llvm.so, the tensor cache, the verify report."""
    model = cache / "models" / "tiny"
    out = {}
    for sub in subs:
        files = [model / "trace-default" / f"{sub}.{ext}" for ext in ("pt2", "json")]
        variant = model / f"{dtype}-default-tvm-{TVM}"
        files += [variant / "compile" / f"{sub}.{ext}" for ext in ("webgpu.tar", "llvm.so", "json")]
        files += sorted((variant / "params" / sub).iterdir()) + [variant / "verify" / f"{sub}.json"]
        for f in files:
            data = f.read_bytes()
            if f.suffix == ".json":
                data = json.dumps(_without_timings(json.loads(data)), sort_keys=True).encode()
            out[str(f.relative_to(model))] = hashlib.sha256(data).hexdigest()
    return out


def leftovers(cache: Path) -> list[Path]:
    """Hidden entries (temp files/dirs of atomic writes) beside the model-stage targets."""
    return sorted(p for p in (cache / "models").rglob(".*"))


def run_killed_mid_write(project: Path, args: list[str], env: dict, watch: Path, prefix: str,
                         timeout: float = 900) -> tuple[list[Path], str]:
    """Start ``doit *args`` and SIGKILL its whole process group (doit and the stage it runs) as soon as a temp of
    an atomic write named ``.<prefix>...`` appears in ``watch``. Returns the temps seen and doit's output."""
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline, seen = time.monotonic() + timeout, []
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen = sorted(watch.glob(f".{prefix}*")) if watch.is_dir() else []
            if seen:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not seen:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=30)
    output = "".join(lines)
    assert seen, f"doit finished or timed out before a temp of .{prefix}* appeared in {watch}:\n{output}"
    assert proc.returncode == -signal.SIGKILL, output
    return seen, output


def perturb_weights(weights: Path) -> None:
    """Rewrite a safetensors file with one floating-point tensor changed (same names, shapes, metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(weights))
    name = next(n for n in sorted(tensors) if tensors[n].is_floating_point() and n.endswith(".weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(weights), metadata=metadata)


@pytest.fixture
def fake_tvm_env(tmp_path):
    """A doit environment on a fake TVM checkout whose ``tvm_build`` selects the installed apache-tvm wheel."""
    repo = make_fake_tvm(tmp_path / "tvm-remote")
    cache = tmp_path / "cache"
    return dict(os.environ, WEBSD_TVM_MIRROR=str(repo), WEBSD_TVM_BUILD="wheel", WEBSD_PATHS_CACHE=str(cache)), cache


def test_only_stale_model_stages_run(tmp_path, fake_tvm_env):
    env, cache = fake_tvm_env
    project = copy_project(tmp_path / "project")

    def doit(*args):
        res = run_doit(*args, cwd=project, env=env)
        assert res.returncode == 0, res.output
        return res

    everything = {"tvm_checkout", "tvm_build", "weights"} | tasks("trace compile shard verify")
    first = doit("verify", "shard")  # everything but link (which needs a real TVM's tvmjs runtime)
    assert first.executed == everything, first.output
    built = artifacts(cache)
    # doit's own process imported the copy's pipeline: the stages' code dependencies are the copy's files
    (project / "pipeline" / "models" / "tiny.py").write_text((project / "pipeline" / "models" / "tiny.py")
                                                             .read_text() + "\n_PROBE = 1\n")
    status = run_doit("list", "--status", "weights", cwd=project, env=env).output
    assert status.split()[0] == "R", status
    (project / "pipeline" / "models" / "tiny.py").write_text((project / "pipeline" / "models" / "tiny.py")
                                                             .read_text().replace("\n_PROBE = 1\n", ""))

    # nothing changed: nothing runs
    again = doit("verify", "shard")
    assert again.executed == set() and again.uptodate == everything, again.output

    # a TVM developer's edit of the checkout's Python package: the TVM stages re-run, tracing and sharding do not
    (cache / "tvm" / TVM / "src" / "python" / "tvm" / "__init__.py").write_text("__version__ = 'edited'\n")
    tvm_edit = doit("verify", "shard")
    assert tvm_edit.executed == {"tvm_build"} | tasks("compile verify"), tvm_edit.output
    assert artifacts(cache) == built  # the same wheel compiles the same bytes

    # model.dtype: compile/shard/verify of the new dtype, not the (dtype-independent) trace. One submodel keeps the
    # test short (test_link_follows_compile switches all of them, link included).
    half = doit("verify_clip", "shard_clip", "model.dtype=float16")
    assert half.executed == tasks("compile shard verify", ["clip"]), half.output
    assert json.loads((cache / f"models/tiny/float16-default-tvm-{TVM}/verify/clip.json").read_text())["passed"]
    # switching back finds the float32 outputs (per-dtype directories) up to date
    back = doit("verify", "shard")
    assert back.executed == set(), back.output
    assert artifacts(cache) == built

    # the UNet wrapper's code, a real graph change: the UNet's stages only, and not shard (the weights are the same)
    unet_py = project / "pipeline" / "submodels" / "unet.py"
    original_unet_py = unet_py.read_text()
    edit(unet_py, *UNET_EDIT)
    code_edit = doit("verify", "shard")
    assert code_edit.executed == tasks("trace compile verify", ["unet"]), code_edit.output
    edited = artifacts(cache)
    # the copy's stage code ran: the traced graph changed
    assert edited["trace-default/unet.json"] != built["trace-default/unet.json"]
    assert edited[f"float32-default-tvm-{TVM}/params/unet/params_shard_0.bin"] == built[f"float32-default-tvm-{TVM}/params/unet/params_shard_0.bin"]
    assert {k: v for k, v in edited.items() if "unet" not in k} == {k: v for k, v in built.items() if "unet" not in k}

    # new weight values: re-trace (it loads the model), re-shard and re-verify the UNet, no recompile (same graph)
    weights = next((cache / "models" / "tiny" / "diffusers" / "unet").glob("*.safetensors"))
    original_weights = weights.read_bytes()
    perturb_weights(weights)
    new_weights = doit("verify", "shard")
    assert new_weights.executed == {"trace_unet", "shard_unet", "verify_unet"}, new_weights.output
    reweighted = artifacts(cache)
    assert reweighted["trace-default/unet.json"] == edited["trace-default/unet.json"]
    assert reweighted[f"float32-default-tvm-{TVM}/params/unet/params_shard_0.bin"] != edited[
        f"float32-default-tvm-{TVM}/params/unet/params_shard_0.bin"]

    # interruption: back to the original code and weights, doit (and its stage) SIGKILLed while compile_unet writes
    unet_py.write_text(original_unet_py)
    weights.write_bytes(original_weights)
    temps, killed_output = run_killed_mid_write(project, ["verify", "shard"], env,
                                                cache / "models" / "tiny" / f"float32-default-tvm-{TVM}" / "compile", "unet.")
    started = re.findall(r"^\.  (\S+)", killed_output, re.M)
    assert started[-1] == "compile_unet", killed_output
    finished = set(started[:-1])  # doit's order among independent tasks varies from run to run (shard_unet may
    assert "trace_unet" in finished, killed_output  # come before or after compile_unet)
    resumed = doit("verify", "shard")
    # each task's state is committed as it finishes (doit_support.CommittingSqliteDB): what finished before the kill
    # (trace_unet, perhaps shard_unet) stays done; the killed compile_unet and what was still to come run
    assert resumed.executed == tasks("compile shard verify", ["unet"]) - finished, (killed_output, resumed.output)
    assert artifacts(cache) == built, "an interrupted and resumed build differs from an uninterrupted one"
    assert leftovers(cache) == [], f"temps left beside the targets (seen at the kill: {temps})"
    assert doit("verify", "shard").executed == set()


@pytest.mark.tvm_source
def test_link_follows_compile(tmp_path, real_cache):
    """With a real TVM (the tvmjs runtime): link_<sub> re-runs with its compile_<sub>, and per dtype."""
    project = copy_project(tmp_path / "project")
    cache = tmp_path / "cache"
    # the session's TVM checkout, selection and runtime; the model stages start from nothing
    for name in ("tvm", "tvmjs"):
        shutil.copytree(real_cache / name / TVM, cache / name / TVM, symlinks=True)
    env = real_env(cache)

    def doit(*args):
        res = run_doit(*args, cwd=project, env=env)
        assert res.returncode == 0, res.output
        return res

    first = doit("link", "verify")
    assert tasks("trace compile link shard verify") <= first.executed, first.output
    again = doit("link", "verify")
    assert again.executed == set() and {"tvmjs_runtime", *tasks("link")} <= again.uptodate, again.output

    edit(project / "pipeline" / "submodels" / "unet.py", *UNET_EDIT)
    code_edit = doit("link", "verify")
    assert code_edit.executed == tasks("trace compile link verify", ["unet"]), code_edit.output

    half = doit("link", "verify", "model.dtype=float16")
    assert half.executed == tasks("compile link shard verify"), half.output
    assert all((cache / "models" / "tiny" / f"float16-default-tvm-{TVM}" / "wasm" / f"{s}.wasm").stat().st_size > 0 for s in SUBS)
    back = doit("link", "verify")
    assert back.executed == set(), back.output
    assert leftovers(cache) == []


@pytest.mark.tvm_source
def test_switching_tvm_version_rebuilds_nothing_the_second_time(real_cache):
    """tvm.version 0.26.0 -> 0.21.0 -> back -> again: every TVM-dependent output (checkout, TVM build, tvmjs runtime,
    compile, link, shard, verify) lives under the version's key, so the second switch runs nothing. Needs a v0.21
    build in the session's real cache (it never starts the ~70 min source build itself)."""
    from pipeline.layout import Layout

    stamp = Layout(real_cache, "tiny", "float32", "default", "v0.21.0").tvm_build_stamp
    if not stamp.exists():
        pytest.skip(f"no TVM v0.21.0 build in {real_cache}: run `doit tvm_build tvm.version=0.21.0` with "
                    f"WEBSD_PATHS_CACHE={real_cache} (a source build, ~70 min on 2 cores), or point "
                    "WEBSD_TEST_REAL_CACHE at a cache that has one")
    env = real_env(real_cache)
    targets = ("link", "shard", "verify")

    def doit(*args):
        res = run_doit(*targets, *args, env=env, timeout=3 * 3600)
        assert res.returncode == 0, res.output[-20000:]
        return res

    doit()  # whatever the default version still needs
    doit("tvm.version=0.21.0")
    toolchain = {"tvm_checkout", "tvm_build", "tvmjs_runtime"} | tasks("trace compile link shard verify")
    for version in ("0.26.0", "0.21.0", "0.26.0"):
        again = doit(f"tvm.version={version}")
        assert again.executed == set() and toolchain <= again.uptodate, (version, again.output[-5000:])


def test_lora_change_reruns_only_weight_stages(tmp_path, fake_tvm_env):
    """The LoRA twin of the weight change above: model.lora (a file, its scale, its content) re-runs shard and
    verify of the submodels it fuses into (clip, unet), never trace, compile or the VAE; a bad LoRA file is one
    line and destroys nothing built."""
    from tests.fixtures import make_lora

    env, cache = fake_tvm_env
    project = copy_project(tmp_path / "project")

    def doit(*args, ok=True):
        res = run_doit(*args, cwd=project, env=env)
        assert (res.returncode == 0) == ok, res.output
        return res

    everything = {"tvm_checkout", "tvm_build", "weights"} | tasks("trace compile shard verify")
    assert doit("verify", "shard").executed == everything
    built = artifacts(cache)
    folder = cache / "models" / "tiny" / "diffusers"
    lora_file = make_lora(folder, tmp_path / "lora", seed=1)
    weight_side = tasks("shard verify", ["clip", "unet"])

    fused = doit("verify", "shard", f"model.lora={lora_file}:0.8")
    assert fused.executed == weight_side, fused.output
    with_lora = artifacts(cache)
    variant = f"float32-default-tvm-{TVM}"
    for sub in ("clip", "unet"):
        assert with_lora[f"{variant}/params/{sub}/params_shard_0.bin"] != built[f"{variant}/params/{sub}/params_shard_0.bin"]
        report = json.loads((cache / "models/tiny" / variant / "verify" / f"{sub}.json").read_text())
        assert report["passed"], report
    def graph_side(found):  # traces, compiles and everything of the VAE: what a LoRA must leave alone
        return {k: v for k, v in found.items() if "vae" in k or not ("/params/" in k or "/verify/" in k)}

    assert graph_side(with_lora) == graph_side(built)
    assert doit("verify", "shard", f"model.lora={lora_file}:0.8").executed == set()

    # only the scale
    rescaled = doit("verify", "shard", f"model.lora={lora_file}:0.3")
    assert rescaled.executed == weight_side, rescaled.output
    assert artifacts(cache)[f"{variant}/params/unet/params_shard_0.bin"] != with_lora[f"{variant}/params/unet/params_shard_0.bin"]
    # only the file's content (same path and scale): a LoRA for the UNet alone
    make_lora(folder, tmp_path / "lora", seed=2, components=("unet",))
    refilled = doit("verify", "shard", f"model.lora={lora_file}:0.3")
    assert refilled.executed == weight_side, refilled.output

    # a corrupt LoRA: one line, non-zero exit, and the shards still there
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    before = artifacts(cache)
    failed = doit("verify", "shard", f"model.lora={bad}", ok=False)
    assert "cannot read LoRA" in failed.output and "Traceback" not in failed.output, failed.output
    assert artifacts(cache) == before
    missing = doit("verify", "shard", f"model.lora={tmp_path / 'missing.safetensors'}", ok=False)
    assert "is not a file" in missing.output and "Traceback" not in missing.output, missing.output

    # no LoRA again: the base weights, byte for byte
    back = doit("verify", "shard")
    assert back.executed == weight_side, back.output
    assert artifacts(cache) == built
    assert doit("verify", "shard").executed == set()
