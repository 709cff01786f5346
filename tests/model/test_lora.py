"""model.lora: LoRA files fused into the weights at build time equal diffusers' own pipeline-level fuse, touch only
the text encoder and the UNet, and bad LoRA files are one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.config import load_config
from pipeline.errors import WebsdError
from pipeline.model import hf, lora
from pipeline.page.reference import load_reference_pipeline
from tests.fixtures import make_lora


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model's diffusers folder and two LoRAs for it (one for the UNet alone)."""
    root = tmp_path_factory.mktemp("lora")
    cfg = load_config(cli={"paths.cache": str(root / "cache")})
    folder = hf.materialize(cfg)
    both = make_lora(folder, root / "both", seed=1)
    unet_only = make_lora(folder, root / "unet-only", seed=2, components=("unet",), rank=2)
    return root, folder, both, unet_only


def _cfg(root: Path, value: str = ""):
    return load_config(cli={"paths.cache": str(root / "cache"), "model.lora": value})


def test_parse_scales_and_paths(tiny, tmp_path):
    root, _, both, unet_only = tiny
    got = lora.parse(_cfg(root, f"{both}:0.5, {unet_only}"))
    assert [(l.path, l.scale) for l in got] == [(both, 0.5), (unet_only, 1.0)]
    assert lora.files(_cfg(root, f"{both}:0.5"), "vae") == [] and lora.settings(_cfg(root), "unet") == []
    assert lora.settings(_cfg(root, f"{both}:-1"), "text_encoder") == [[str(both), -1.0]]
    with pytest.raises(WebsdError, match="is not a file"):
        lora.parse(_cfg(root, f"{tmp_path / 'nope.safetensors'}:0.8"))


def test_fused_weights_equal_diffusers_pipeline_fuse(tiny):
    root, folder, both, unet_only = tiny
    loras = [(both, 0.7), (unet_only, 1.3)]
    cfg = _cfg(root, ",".join(f"{p}:{s}" for p, s in loras))
    pipe = load_reference_pipeline(folder, None, loras=loras)
    plain = _cfg(root)
    for component, reference in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder), ("vae", pipe.vae)):
        ours = hf.load_component(cfg, component).state_dict()
        base = hf.load_component(plain, component).state_dict()
        want = reference.state_dict()
        assert sorted(ours) == sorted(want) == sorted(base), component  # no LoRA layers left behind
        changed = [k for k in ours if not torch.equal(ours[k], base[k])]
        for k in ours:
            torch.testing.assert_close(ours[k], want[k], rtol=0, atol=1e-6, msg=f"{component} {k}")
        if component == "vae":
            assert changed == []
        else:  # every attention projection the LoRAs target, and nothing else
            assert changed and all(("attn" in k or "self_attn" in k) and k.endswith("weight") for k in changed), \
                (component, changed)


def test_scale_zero_is_the_base_model(tiny):
    root, _, both, _ = tiny
    fused = hf.load_component(_cfg(root, f"{both}:0"), "unet").state_dict()
    base = hf.load_component(_cfg(root), "unet").state_dict()
    assert all(torch.equal(fused[k], base[k]) for k in base)


def test_bad_lora_files_are_one_line_errors(tiny, tmp_path):
    root, _, _, _ = tiny
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"foo.lora_A.weight": torch.zeros(2, 2), "foo.lora_B.weight": torch.zeros(2, 2)}, str(unrelated))
    not_lora = tmp_path / "not-lora.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(2, 2)}, str(not_lora))
    wrong_shape = tmp_path / "wrong-shape.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 7),
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(7, 2)},
              str(wrong_shape))
    for path, words in ((corrupt, "cannot read LoRA"), (unrelated, "no LoRA weights"),
                        (not_lora, "cannot read LoRA|no LoRA weights"), (wrong_shape, "does not fit")):
        with pytest.raises(WebsdError, match=words) as info:
            hf.load_component(_cfg(root, str(path)), "unet")
        assert "\n" not in str(info.value), str(info.value)
