"""Stage ``shard_<sub>``: the submodel's weights as a tvmjs tensor cache the page downloads.

Output: ``Layout.params_dir(sub)`` (one directory, written atomically) with ``tensor-cache.json`` and
``params_shard_<n>.bin`` (32 MB shards, TVM's writer through pipeline.toolchain.tvm_api). Records carry the trace's
parameter names; ``metadata.param_names`` lists them in the entry function's parameter order (the record order
differs: a large tensor gets a shard of its own), which the page passes to ``getParamsFromCacheByName``.
``model.dtype=float16`` stores floating-point weights as float16 ("raw": tvmjs has no f16 encoding), except those
pipeline.model.params keeps float32.

The weights come from the model (pipeline.model.hf), named by the trace's parameter list (``<sub>.params.json``), not
from the traced program: an edit of a submodel wrapper that keeps its weights does not re-shard.
"""
from __future__ import annotations

from pathlib import Path

from .. import submodels
from ..config import Config
from ..fsutil import atomic_path
from ..layout import TENSOR_CACHE_JSON, Layout
from ..toolchain import tvm_api
from . import hf, lora, params

CONFIG_KEYS = ()  # model.dtype is in the output path
SHARD_CAP_MB = 32


def inputs(cfg: Config, sub: str) -> list[Path]:
    """The trace's parameter list and the weights (not the graph: a wrapper edit that keeps the weights does not
    re-shard)."""
    component = submodels.get(sub).component
    return [Layout.from_config(cfg).trace_params(sub), *hf.weight_files(cfg, component),
            *lora.files(cfg, component)]


def fingerprint(cfg: Config, sub: str) -> list:
    """The LoRA scales fused into this submodel's weights (a new scale re-shards)."""
    return lora.settings(cfg, submodels.get(sub).component)


def outputs(cfg: Config, sub: str) -> list[Path]:
    """The directory's index file (the shards are listed in it)."""
    return [Layout.from_config(cfg).tensor_cache_index(sub)]


def cleans(cfg: Config, sub: str) -> list[Path]:
    return [Layout.from_config(cfg).params_dir(sub)]


def run(cfg: Config, sub: str) -> dict:
    """Stage ``shard_<sub>``: write the tensor cache; returns its metadata."""
    import numpy as np

    traced = params.traced_params(cfg, sub)
    state = hf.load_component(cfg, traced["component"]).state_dict()
    records = traced["params"]
    dtypes = [params.stored_dtype(p, cfg.model.dtype) for p in records]
    names = [p["name"] for p in records]

    missing = [p["key"] for p in records if p["key"] not in state]
    if missing:
        from ..errors import WebsdError

        raise WebsdError(f"{traced['component']} has no weight {missing[0]!r} that trace_{sub} recorded; re-run "
                         f"trace_{sub} (the model folder changed)")

    def arrays():
        for p, dtype in zip(records, dtypes):
            value = state[p["key"]][slice(*p["rows"])] if "rows" in p else state[p["key"]]  # a split table
            yield p["name"], value.detach().contiguous().numpy().astype(np.dtype(dtype), copy=False)

    nbytes = sum(int(np.prod(p["shape"], dtype=np.int64)) * np.dtype(d).itemsize for p, d in zip(records, dtypes))
    metadata = {"model": cfg.model.name, "submodel": sub, "function": sub, "dtype": cfg.model.dtype,
                "ParamSize": len(names), "ParamBytes": nbytes, "param_names": names}
    with atomic_path(Layout.from_config(cfg).params_dir(sub)) as work:
        tvm_api.dump_tensor_cache(arrays(), work, metadata, SHARD_CAP_MB)
    return metadata


def read_cache(params_dir: Path) -> dict:
    """The tensor cache as ``{name: numpy array}`` in record order, read with numpy only (tests, tools)."""
    import json

    import numpy as np

    index = json.loads((Path(params_dir) / TENSOR_CACHE_JSON).read_text())
    out = {}
    for shard_rec in index["records"]:
        data = (Path(params_dir) / shard_rec["dataPath"]).read_bytes()
        for rec in shard_rec["records"]:
            raw = data[rec["byteOffset"]:rec["byteOffset"] + rec["nbytes"]]
            out[rec["name"]] = np.frombuffer(raw, dtype=rec["dtype"]).reshape(rec["shape"])
    return out


def rebuild_cache(params_dir: Path, tensors: dict) -> None:
    """Write the shards that ``tensor-cache.json`` in ``params_dir`` lists, from ``tensors`` (name -> tensor), with
    each record's dtype and byte offset. Used where the shards are too large to carry (the GPU benchmark makes
    them again from the model's seed); the caller checks them against the manifest's sha256."""
    import json

    import numpy as np

    index = json.loads((Path(params_dir) / TENSOR_CACHE_JSON).read_text())
    for shard_rec in index["records"]:
        data = bytearray(shard_rec["nbytes"])
        for rec in shard_rec["records"]:
            arr = tensors[rec["name"]].detach().cpu().contiguous().numpy().astype(np.dtype(rec["dtype"]))
            raw = arr.tobytes()
            if len(raw) != rec["nbytes"]:
                from ..errors import WebsdError

                raise WebsdError(f"{rec['name']}: the model gives {len(raw)} bytes, {TENSOR_CACHE_JSON} lists "
                                 f"{rec['nbytes']}; the model does not match the site")
            data[rec["byteOffset"]:rec["byteOffset"] + rec["nbytes"]] = raw
        with atomic_path(Path(params_dir) / shard_rec["dataPath"]) as work:
            work.write_bytes(bytes(data))
