"""TVM version adapters: one module per TVM API generation, behind the one seam ``pipeline.toolchain.tvm_api``.

Each entry implements the same small set of functions (see ``v0_26.py``) for the Python API of the TVM releases it
is registered for. Adding a TVM version is one module here plus one line in ``REGISTRY`` (and its release facts in
``pipeline/toolchain/versions.py``). Only ``pipeline.toolchain.tvm_api`` imports an adapter; a stage's code
dependencies include just the entry its ``tvm.version`` selects (``select``, pipeline.code_deps), so editing the
v0.21 adapter leaves v0.26 builds fresh.
"""
from __future__ import annotations

from types import ModuleType

from ...errors import WebsdError
from . import v0_21, v0_26

# tvm.version -> adapter
REGISTRY: dict[str, ModuleType] = {
    "0.21.0": v0_21,
    "0.26.0": v0_26,
    "0.27.0": v0_26,
}


def select(version: str) -> ModuleType:
    """THE adapter selector: the adapter for a TVM version, given as ``tvm.version`` (what a build will import) or
    as an imported TVM's ``tvm.__version__`` (what this process imports), matched by major.minor (a source build of
    v0.26.0 reports ``0.26.dev0``)."""
    major_minor = ".".join(version.split(".")[:2])
    for known, adapter in REGISTRY.items():
        if ".".join(known.split(".")[:2]) == major_minor:
            return adapter
    raise WebsdError(f"no TVM API adapter for TVM {version} ({', '.join(REGISTRY)}); add a module to "
                     f"pipeline/toolchain/tvm_versions/ and a line to its REGISTRY, or set tvm.version")
