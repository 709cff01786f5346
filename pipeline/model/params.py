"""How the traced weights are stored and passed: the policy compile and shard must agree on, and the trace's
parameter list (``Layout.trace_params``) that both read."""
from __future__ import annotations

from ..config import Config
from ..errors import WebsdError
from ..fsutil import read_json
from ..layout import Layout


def stored_dtype(param: dict, model_dtype: str) -> str:
    """dtype a parameter (a record with ``dtype`` and ``shape``) is stored and passed in.

    Floating-point weights take ``model.dtype``, except a float16 tensor whose byte size is not a multiple of 4
    (e.g. the VAE's 3-element conv_out bias): WebGPU cannot bind it as a storage buffer, so it stays float32 and
    the float16 build casts it on the GPU (compile keeps it out of ToMixedPrecision's float16 inputs)."""
    if not param["dtype"].startswith("float"):
        return param["dtype"]
    count = 1
    for d in param["shape"]:
        count *= int(d)
    return "float32" if model_dtype == "float16" and (2 * count) % 4 else model_dtype


def traced_params(cfg: Config, sub: str) -> dict:
    """``{"component": ..., "params": [{"name", "key", "arg", "shape", "dtype"}, ...]}`` in the entry function's
    parameter order; ``key`` is the name in the component's state dict, ``rows`` (``[start, stop]``, only on a
    split table) the rows of it the parameter holds."""
    path = Layout.from_config(cfg).trace_params(sub)
    found = read_json(path)
    if found is None:
        raise WebsdError(f"no trace of {sub} at {path}; run the trace_{sub} stage first")
    return found
