"""TVM version adapters: one module per TVM API generation, behind the one seam ``pipeline.tvm_api``.

Each entry implements the same small set of functions (see ``v0_26.py``) for the Python API of the TVM releases it
is registered for. Adding a TVM version is one module here plus one line in ``REGISTRY`` (and its release facts in
``pipeline/versions.py``). Only ``pipeline.tvm_api`` imports an adapter; a stage's code dependencies include just
the entry its ``tvm.version`` selects (pipeline.stages), so editing the v0.21 adapter leaves v0.26 builds fresh.
"""
from __future__ import annotations

from types import ModuleType

from ..errors import WebsdError
from . import v0_21, v0_26

# tvm.version -> adapter
REGISTRY: dict[str, ModuleType] = {
    "0.21.0": v0_21,
    "0.26.0": v0_26,
    "0.27.0": v0_26,
}


def get(version: str) -> ModuleType:
    """The adapter of a ``tvm.version``."""
    try:
        return REGISTRY[version]
    except KeyError:
        raise WebsdError(f"no TVM API adapter for tvm.version {version!r} ({', '.join(REGISTRY)}); add a module "
                         f"to pipeline/tvm_versions/ and a line to its REGISTRY") from None


def for_version_string(tvm_version: str) -> ModuleType:
    """The adapter for the ``tvm.__version__`` of an imported TVM, matched by major.minor (a source build of
    v0.26.0 reports ``0.26.dev0``)."""
    major_minor = ".".join(tvm_version.split(".")[:2])
    for version, adapter in REGISTRY.items():
        if ".".join(version.split(".")[:2]) == major_minor:
            return adapter
    raise WebsdError(f"the imported TVM is {tvm_version}, which no adapter in pipeline/tvm_versions/ covers "
                     f"({', '.join(REGISTRY)}); add one or set tvm.version")
