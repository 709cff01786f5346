"""Stage trace_<sub>: torch.export of the entry wrappers, with no TVM involved."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from pipeline.model import trace
from tests.model_build import ROOT, tiny_config, tiny_f32  # noqa: F401 - fixture


@pytest.mark.slow
def test_trace_never_imports_tvm(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from pipeline import models
        from pipeline.model import hf, trace
        from pipeline.config import load_config
        cfg = load_config(cli={{"paths.cache": {str(tmp_path / "cache")!r}}})
        hf.materialize(cfg)
        info = trace.run(cfg, "clip")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tvm", "tvm_ffi"))
        print("TVM_MODULES", loaded)
        print("PARAMS", len(info["params"]))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TVM_MODULES []" in out.stdout
    pt2, desc = trace.paths(tiny_config(tmp_path / "cache"), "clip")
    assert pt2.is_file() and json.loads(desc.read_text())["params"]


@pytest.mark.slow
def test_trace_describes_the_entry_contract(tiny_f32):  # noqa: F811
    descs = {sub: json.loads(trace.paths(tiny_f32, sub)[1].read_text()) for sub in ("clip", "unet", "vae")}
    spec = {sub: [(i["name"], i["shape"], i["dtype"]) for i in d["inputs"]] for sub, d in descs.items()}
    assert spec["clip"] == [("input_ids", [2, 77], "int32")]
    assert spec["unet"] == [("latents", [1, 4, 8, 8], "float32"), ("timestep", [1], "float32"),
                            ("text_emb", [2, 77, 32], "float32"), ("guidance_scale", [1], "float32")]
    assert spec["vae"] == [("latents", [1, 4, 8, 8], "float32")]
    assert descs["vae"]["outputs"] == [{"shape": [1, 64, 64, 3], "dtype": "float32"}]
    assert descs["clip"]["params"][0]["name"] == "text_encoder.embeddings.token_embedding.weight"
    # every attention layer is one fused op
    assert descs["unet"]["attention"] and all(d["fused"] for d in descs["unet"]["attention"])
    # the program round-trips and carries exactly the described parameters
    ep, info = trace.load(tiny_f32, "unet")
    assert [p["name"] for p in info["params"]] == [n for n, _ in ep.named_parameters()]
