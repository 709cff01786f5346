"""Stage ``shard_<sub>``: the traced weights as a tvmjs tensor cache the page downloads.

Output: ``Layout.params_dir(sub)`` (one directory, written atomically) with ``tensor-cache.json`` and
``params_shard_<n>.bin`` (32 MB shards, TVM's ``dump_tensor_cache``). Records are in the entry function's
parameter order; ``metadata.param_names`` repeats that order for ``getParamsFromCacheByName``.
``model.dtype=float16`` stores floating-point weights as float16 ("raw": tvmjs has no f16 encoding), which is
what the float16 build's ``ToMixedPrecision`` expects.

This needs only the trace and ``model.dtype``, not the compiled module, so it can run beside compile.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from . import trace
from .config import Config
from .fsutil import atomic_path
from .layout import Layout

CONFIG_KEYS = ("model.dtype",)
SHARD_CAP_MB = 32
CACHE_JSON = "tensor-cache.json"


def file_deps(cfg: Config, sub: str) -> list[Path]:
    return trace.targets(cfg, sub)


def targets(cfg: Config, sub: str) -> list[Path]:
    """The directory's index file (the shards are listed in it)."""
    return [Layout.from_config(cfg).params_dir(sub) / CACHE_JSON]


def stored_dtype(param: dict, model_dtype: str) -> str:
    """dtype a parameter (a trace description record: ``dtype``, ``shape``) is stored and passed in.

    Floating-point weights take ``model.dtype``, except a float16 tensor whose byte size is not a multiple of 4
    (e.g. the VAE's 3-element conv_out bias): WebGPU cannot bind it as a storage buffer, so it stays float32 and
    the float16 build casts it on the GPU (compile keeps it out of ToMixedPrecision's float16 inputs)."""
    if not param["dtype"].startswith("float"):
        return param["dtype"]
    count = 1
    for d in param["shape"]:
        count *= int(d)
    return "float32" if model_dtype == "float16" and (2 * count) % 4 else model_dtype


def shard(cfg: Config, sub: str) -> dict:
    """Write the tensor cache; returns its metadata."""
    import numpy as np

    ep, info = trace.load(cfg, sub)
    state = ep.state_dict
    names = [p["name"] for p in info["params"]]

    def arrays():
        for p in info["params"]:
            arr = state[p["name"]].detach().contiguous().numpy()
            yield p["name"], arr.astype(np.dtype(stored_dtype(p, cfg.model.dtype)), copy=False)

    dtypes = [stored_dtype(p, cfg.model.dtype) for p in info["params"]]
    nbytes = sum(int(np.prod(p["shape"], dtype=np.int64)) * np.dtype(d).itemsize
                 for p, d in zip(info["params"], dtypes))
    metadata = {"model": cfg.model.name, "submodel": sub, "function": sub, "dtype": cfg.model.dtype,
                "ParamSize": len(names), "ParamBytes": nbytes, "param_names": names}
    from tvm.contrib.tvmjs import dump_tensor_cache

    out = Layout.from_config(cfg).params_dir(sub)
    with atomic_path(out) as work, contextlib.redirect_stdout(io.StringIO()):
        dump_tensor_cache(arrays(), str(work), encode_format="raw", meta_data=metadata,
                          shard_cap_mb=SHARD_CAP_MB, show_progress=False)
    return metadata


def read_cache(params_dir: Path) -> dict:
    """The tensor cache as ``{name: numpy array}`` in record order, read with numpy only (tests, tools)."""
    import json

    import numpy as np

    index = json.loads((Path(params_dir) / CACHE_JSON).read_text())
    out = {}
    for shard_rec in index["records"]:
        data = (Path(params_dir) / shard_rec["dataPath"]).read_bytes()
        for rec in shard_rec["records"]:
            raw = data[rec["byteOffset"]:rec["byteOffset"] + rec["nbytes"]]
            out[rec["name"]] = np.frombuffer(raw, dtype=rec["dtype"]).reshape(rec["shape"])
    return out


def model_params(cfg: Config, sub: str) -> dict:
    """The submodel wrapper's parameters by name: the same tensors, under the same names, as the trace's
    ``params`` (torch.export keeps the module's parameter names)."""
    from . import submodels

    return dict(submodels.get(sub).wrapper(cfg).named_parameters())


def rebuild_cache(params_dir: Path, params: dict) -> None:
    """Write the shards that ``tensor-cache.json`` in ``params_dir`` lists, from ``params`` (name -> tensor), with
    each record's dtype and byte offset. Used where the shards are too large to carry (the GPU benchmark makes
    them again from the model's seed); the caller checks them against the manifest's sha256."""
    import json

    import numpy as np

    index = json.loads((Path(params_dir) / CACHE_JSON).read_text())
    for shard_rec in index["records"]:
        data = bytearray(shard_rec["nbytes"])
        for rec in shard_rec["records"]:
            arr = params[rec["name"]].detach().cpu().contiguous().numpy().astype(np.dtype(rec["dtype"]))
            raw = arr.tobytes()
            if len(raw) != rec["nbytes"]:
                from .errors import WebsdError

                raise WebsdError(f"{rec['name']}: the model gives {len(raw)} bytes, {CACHE_JSON} lists "
                                 f"{rec['nbytes']}; the model does not match the site")
            data[rec["byteOffset"]:rec["byteOffset"] + rec["nbytes"]] = raw
        with atomic_path(Path(params_dir) / shard_rec["dataPath"]) as work:
            work.write_bytes(bytes(data))
