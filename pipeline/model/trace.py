"""Stage ``trace_<sub>``: ``torch.export`` of a submodel's entry wrapper (see pipeline.submodels).

Outputs, in ``Layout.trace_dir()`` (per model and image size):
  <sub>.pt2          the ExportedProgram (``torch.export.save``) without weight values: every parameter is a
                     one-element stand-in of its shape (stride 0), so the file is KBs, not GBs. Compile needs only
                     the graph; shard and verify read the weights from the model (pipeline.model.hf).
  <sub>.json         inputs/outputs (name, shape, dtype), parameters in the order TVM's importer passes them
                     (``name``: state-dict key, also the tensor-cache record name; ``arg``: the graph placeholder),
                     and the graph's hash
  <sub>.params.json  the parameters alone, with their key in the model component (``Layout.trace_params``):
                     what shard reads, unchanged by an edit of the wrapper that keeps the weights

Tracing never imports TVM: it runs before (and independently of) the TVM build.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path

from .. import models, submodels
from ..config import Config
from ..fsutil import atomic_write, read_json, write_json
from ..layout import Layout
from ..submodels import code, vae_tiling
from . import hf

CONFIG_KEYS = ()  # model.name and the image size (model.image_size, .width, .height) are in the output paths


def fingerprint(cfg: Config, sub: str) -> dict:
    """The VAE's tile (model.vae_tile, or the automatic one from model.dtype and webgpu.limits): a new tile
    changes the graph, so it re-traces, and through the trace's description recompiles."""
    return {"vae_tile": vae_tiling.resolve(cfg)} if sub == "vae" else {}


def paths(cfg: Config, sub: str) -> tuple[Path, Path]:
    """(program .pt2, description .json) of a submodel's trace."""
    submodels.get(sub)
    trace_dir = Layout.from_config(cfg).trace_dir()
    return trace_dir / f"{sub}.pt2", trace_dir / f"{sub}.json"


def inputs(cfg: Config, sub: str) -> list[Path]:
    return hf.weight_files(cfg, submodels.get(sub).component)


def outputs(cfg: Config, sub: str) -> list[Path]:
    return [*paths(cfg, sub), Layout.from_config(cfg).trace_params(sub)]


def _without_weights(ep) -> None:
    """Replace every parameter value by a one-element stand-in of the same shape and dtype (stride 0)."""
    import torch

    for name, value in list(ep.state_dict.items()):
        if isinstance(value, torch.nn.Parameter):
            ep.state_dict[name] = torch.nn.Parameter(torch.zeros((), dtype=value.dtype).expand(value.shape),
                                                     requires_grad=False)


def _torch_dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def describe(ep, input_names: list[str]) -> dict:
    """Inputs, outputs and parameters of an ExportedProgram, in the calling order of the Relax function
    ``from_exported_program(..., keep_params_as_input=True)`` makes of it: user inputs, then parameters.
    (Buffers and constants are bound into the module by the importer, so they are not parameters.)"""
    from torch.export.graph_signature import InputKind

    specs = ep.graph_signature.input_specs
    state = ep.state_dict
    params = [{"name": s.target, "arg": s.arg.name, "shape": list(state[s.target].shape),
               "dtype": _torch_dtype_name(state[s.target].dtype)}
              for s in specs if s.kind is InputKind.PARAMETER]
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    user = [s.arg.name for s in specs if s.kind is InputKind.USER_INPUT]
    inputs = []
    for given, arg in zip(input_names, user):
        val = placeholders[arg].meta["val"]
        inputs.append({"name": given, "shape": list(val.shape), "dtype": _torch_dtype_name(val.dtype)})
    output_node = next(n for n in ep.graph.nodes if n.op == "output")
    outs = output_node.args[0]
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    outputs = [{"shape": list(o.meta["val"].shape), "dtype": _torch_dtype_name(o.meta["val"].dtype)} for o in outs]
    return {"inputs": inputs, "outputs": outputs, "params": params,
            "param_bytes": sum(state[p["name"]].numel() * state[p["name"]].element_size() for p in params)}


def run(cfg: Config, sub: str) -> dict:
    """Stage ``trace_<sub>``: export the submodel's wrapper and save program + description; returns the description."""
    sub_module = code.entry(sub)
    dims = models.dims(cfg)
    pt2, info_path = paths(cfg, sub)
    import torch

    start = time.perf_counter()
    # the graph alone is kept (weight values are dropped below), so the LoRA need not be fused: a LoRA change
    # does not re-trace, and so never recompiles
    wrapper = sub_module.wrapper(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lora="")))
    example = sub_module.inputs(dims, torch.Generator().manual_seed(cfg.model.seed))
    loaded = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(wrapper, tuple(example.values()))
    exported = time.perf_counter()
    info = describe(ep, list(example))
    info.update(
        submodel=sub, function=sub, output=submodels.get(sub).output, model=cfg.model.name,
        width=dims.width, height=dims.height, latent_width=dims.latent_width, latent_height=dims.latent_height,
        attention=_attention_decisions(wrapper),
        **({"vae_tile": vae_tiling.resolve(cfg)} if sub == "vae" else {}),
        torch_version=torch.__version__,
    )
    # The graph alone (no weight values): compile depends on this description, not on the .pt2, so new weights
    # re-trace and re-shard but do not recompile (params are inputs of the compiled module).
    info["graph_sha256"] = hashlib.sha256(
        (ep.graph_module.code + str(ep.graph_signature)).encode()).hexdigest()
    params = _component_keys(wrapper, submodels.get(sub).component, info["params"])
    _without_weights(ep)
    with atomic_write(pt2, "wb") as f:
        torch.export.save(ep, f)
    # timings go to the log, not the description: it must be byte-identical for an identical graph
    print(f"trace {sub}: load {loaded - start:.1f}s, export {exported - loaded:.1f}s, "
          f"save {time.perf_counter() - exported:.1f}s", file=sys.stderr)
    write_json(Layout.from_config(cfg).trace_params(sub), params)
    write_json(info_path, info)
    return info


def _component_keys(wrapper, component: str, params: list[dict]) -> dict:
    """The trace's parameters with their key in the component's own state dict. A wrapper holds either the
    component itself as an attribute (``unet.conv_in.weight`` is the UNet's ``conv_in.weight``) or parts of it
    under their own names (the VAE's ``decoder``: the same key). A module's ``row_slices`` (``{param: (weight,
    start, stop)}``, pipeline.submodels.clip's split embedding) maps a parameter to rows of a weight: ``rows``."""
    whole = {attr for attr, child in wrapper.named_children() if hasattr(child, "from_pretrained")}
    sliced = {f"{prefix}.{param}": (f"{prefix}.{weight}", [start, stop]) for prefix, module in wrapper.named_modules()
              for param, (weight, start, stop) in getattr(module, "row_slices", {}).items()}

    def key(name: str) -> str:
        attr, _, rest = name.partition(".")
        return rest if attr in whole else name

    def record(p: dict) -> dict:
        if p["name"] in sliced:
            weight, rows = sliced[p["name"]]
            return {**p, "key": key(weight), "rows": rows}
        return {**p, "key": key(p["name"])}

    return {"component": component, "params": [record(p) for p in params]}


def _attention_decisions(wrapper) -> list[dict]:
    """How FusedAttnProcessor traced each attention layer (distinct shapes), for the record."""
    from ..submodels.attention import FusedAttnProcessor

    seen, out = set(), []
    for module in wrapper.modules():
        proc = getattr(module, "processor", None)
        if isinstance(proc, FusedAttnProcessor):
            for d in proc.decisions:
                key = tuple(sorted(d.items()))
                if key not in seen:
                    seen.add(key)
                    out.append(d)
    return out


def load(cfg: Config, sub: str):
    """(ExportedProgram, description) of a finished trace."""
    from ..errors import WebsdError

    pt2, info_path = paths(cfg, sub)
    info = read_json(info_path)
    if info is None or not pt2.is_file():
        raise WebsdError(f"no trace of {sub} at {pt2}; run the trace_{sub} stage first")
    import torch

    from ..submodels.attention import attention_op

    attention_op()  # the traces hold websd::attention: torch.export.load needs it registered
    return torch.export.load(str(pt2)), info
