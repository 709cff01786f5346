"""Test fixtures: a fake TVM (a small git repository with a CMake project, tagged like a release) for the toolchain
stage tests, and a trivial Relax module for the tests that compile with a real TVM."""
from __future__ import annotations

import subprocess
from pathlib import Path

CMAKELISTS = """\
cmake_minimum_required(VERSION 3.18)
project(fake_tvm C)
include(${CMAKE_BINARY_DIR}/config.cmake)
message(STATUS "fake tvm USE_LLVM=${USE_LLVM}")
add_library(tvm_runtime SHARED src/runtime.c)
add_library(tvm SHARED src/compiler.c)
# like TVM >= 0.22: libraries in build/lib
set_target_properties(tvm_runtime tvm PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def make_fake_tvm(root: Path, version: str = "0.26.0") -> Path:
    """A repo with tag v<version> and a branch ``next`` one commit ahead; returns its path."""
    repo = root / "fake-tvm"
    (repo / "src").mkdir(parents=True)
    (repo / "cmake").mkdir()
    (repo / "web").mkdir()
    (repo / "python" / "tvm").mkdir(parents=True)
    (repo / "CMakeLists.txt").write_text(CMAKELISTS)
    (repo / "cmake" / "config.cmake").write_text("# fake TVM config.cmake template\nset(USE_LLVM OFF)\n")
    (repo / "src" / "runtime.c").write_text("int tvm_runtime_answer(void) { return 42; }\n")
    (repo / "src" / "compiler.c").write_text("int tvm_compile(void) { return 1; }\n")
    (repo / "web" / "runtime.js").write_text("export const version = 1;\n")
    (repo / "python" / "tvm" / "__init__.py").write_text("__version__ = 'fake'\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release")
    git(repo, "tag", f"v{version}")
    git(repo, "checkout", "-q", "-b", "next")
    (repo / "src" / "compiler.c").write_text("int tvm_compile(void) { return 2; }\n")
    git(repo, "commit", "-q", "-am", "next")
    git(repo, "checkout", "-q", "main")
    return repo


def add_submodule_gitlink(repo: Path, path: str, url: str, commit: str) -> None:
    """Commit a submodule entry (gitlink + .gitmodules) without cloning it."""
    (repo / ".gitmodules").write_text(f'[submodule "{path}"]\n\tpath = {path}\n\turl = {url}\n')
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{commit},{path}")
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "-qm", f"submodule {path}")


def matmul_add_relu():
    """``relu(x @ w + b)`` as a Relax module, x (4, 8), w (8, 16), b (16,); imports the TVM in use."""
    import tvm
    from tvm.script import relax as R

    @tvm.script.ir_module
    class MatmulAddRelu:
        @R.function
        def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 16), "float32"), b: R.Tensor((16,), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.add(R.matmul(x, w), b))
                R.output(y)
            return y

    return MatmulAddRelu


def make_lora(model_dir: Path, out: Path, seed: int, components=("unet", "text_encoder"), rank: int = 4) -> Path:
    """A LoRA for the diffusers folder ``model_dir`` (the tiny model's), made with peft as diffusers' training
    scripts make one (random non-zero A and B, so fusing it changes the weights), saved by
    ``StableDiffusionPipeline.save_lora_weights``; returns the .safetensors path."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    layers = {}
    if "unet" in components:
        unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        layers["unet_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    if "text_encoder" in components:
        text = CLIPTextModel.from_pretrained(model_dir / "text_encoder", local_files_only=True)
        text.add_adapter(LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                                    target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(text))
    out.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(out, safe_serialization=True, **layers)
    return out / "pytorch_lora_weights.safetensors"
