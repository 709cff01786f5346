"""WebGPU limits, checked when the site is built: the profile a site targets, what each kernel uses, the check.

A browser gives a page WebGPU's *default* limits unless the page asks for more, and a minimal browser offers no
more than those. A kernel over a limit fails only on the user's machine, at shader-pipeline creation or at
dispatch ("The number of storage buffers (17) in the Compute stage exceeds the maximum per-stage limit (16)"), so
compile measures every kernel of the WebGPU build against a profile (``webgpu.limits``) and refuses the build
with one line naming the submodel, the kernel, the limit, the value and the fix.

What is measured, per kernel, from the WGSL TVM generated (the ground truth the browser compiles):
  storage buffers (``var<storage`` bindings), workgroup size and invocations (``@workgroup_size``), workgroup
  storage (``var<workgroup>`` variables, each rounded up to 16 bytes as WebGPU counts them);
and from the scheduled TIR: workgroups per dimension (``blockIdx`` extents, folded as tvmjs folds a large
``blockIdx.x`` into z). Per module, from the lowered Relax: every buffer the runtime allocates or the page
uploads is bound whole (tvmjs binds GPU buffers without a size), so each one's byte size must fit
``maxStorageBufferBindingSize`` and ``maxBufferSize`` and be a multiple of 4.

Only the standard library at module level; TVM objects are passed in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..errors import WebsdError

LIMIT_NAMES = ("maxStorageBuffersPerShaderStage", "maxStorageBufferBindingSize", "maxBufferSize",
               "maxComputeWorkgroupStorageSize", "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX",
               "maxComputeWorkgroupSizeY", "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupsPerDimension")

# WebGPU's default limits (the spec's "Limits" table): what every conforming browser offers.
WEBGPU_DEFAULTS = {
    "maxStorageBuffersPerShaderStage": 8, "maxStorageBufferBindingSize": 128 << 20, "maxBufferSize": 256 << 20,
    "maxComputeWorkgroupStorageSize": 16 << 10, "maxComputeInvocationsPerWorkgroup": 256,
    "maxComputeWorkgroupSizeX": 256, "maxComputeWorkgroupSizeY": 256, "maxComputeWorkgroupSizeZ": 64,
    "maxComputeWorkgroupsPerDimension": 65535,
}

# name -> limits. "default" runs in any conforming browser. "desktop" is what tvmjs's own detectGPUDevice asks
# for (10 storage buffers, 1 GiB buffers and bindings, 32 KiB workgroup storage, 1024 invocations): desktop
# Chrome grants it on current discrete and integrated GPUs, phones and minimal browsers may not.
PROFILES: dict[str, dict[str, int]] = {
    "default": dict(WEBGPU_DEFAULTS),
    "desktop": {**WEBGPU_DEFAULTS, "maxStorageBuffersPerShaderStage": 10, "maxStorageBufferBindingSize": 1 << 30,
                "maxBufferSize": 1 << 30, "maxComputeWorkgroupStorageSize": 32 << 10,
                "maxComputeInvocationsPerWorkgroup": 1024, "maxComputeWorkgroupSizeX": 1024,
                "maxComputeWorkgroupSizeY": 1024},
}


def profile(name: str) -> dict[str, int]:
    try:
        return PROFILES[name]
    except KeyError:
        raise WebsdError(f"unknown WebGPU limits profile {name!r}; set webgpu.limits to one of "
                         f"{', '.join(PROFILES)}") from None


@dataclass
class KernelUse:
    """What one compute kernel needs."""

    name: str
    storage_buffers: int = 0
    workgroup_size: tuple[int, int, int] = (1, 1, 1)
    workgroup_storage: int = 0
    workgroups: tuple[int, int, int] | None = None  # as dispatched (after tvmjs folds x into z); None: dynamic

    def limits(self) -> dict[str, int]:
        """The value this kernel needs of each limit it touches."""
        x, y, z = self.workgroup_size
        used = {"maxStorageBuffersPerShaderStage": self.storage_buffers, "maxComputeWorkgroupStorageSize":
                self.workgroup_storage, "maxComputeInvocationsPerWorkgroup": x * y * z,
                "maxComputeWorkgroupSizeX": x, "maxComputeWorkgroupSizeY": y, "maxComputeWorkgroupSizeZ": z}
        if self.workgroups is not None:
            used["maxComputeWorkgroupsPerDimension"] = max(self.workgroups)
        return used


@dataclass
class ModuleUse:
    """What a submodel's WebGPU build needs: its kernels, and the byte size of every buffer it binds."""

    kernels: list[KernelUse] = field(default_factory=list)
    buffers: dict[str, int] = field(default_factory=dict)  # a description of the buffer -> bytes

    def required(self) -> dict[str, int]:
        """The largest value of each limit over the whole module (what the page must request)."""
        need = dict.fromkeys(LIMIT_NAMES, 0)
        for k in self.kernels:
            for name, value in k.limits().items():
                need[name] = max(need[name], value)
        largest = max(self.buffers.values(), default=0)
        need["maxStorageBufferBindingSize"] = need["maxBufferSize"] = largest
        return need


# --- measuring --------------------------------------------------------------------------------------------------

_KERNEL_SPLIT = re.compile(r"^//\s*Function:\s*(\S+)\s*$", re.M)
_SCALAR_BYTES = {"f32": 4, "i32": 4, "u32": 4, "f16": 2, "bool": 4}


def _wgsl_type_size(t: str) -> tuple[int, int]:
    """(size, alignment) of a WGSL type used for workgroup variables: scalars, vecN, array<T, N>."""
    t = t.strip()
    m = re.fullmatch(r"array<\s*(.+)\s*,\s*(\d+)u?\s*>", t)
    if m:
        size, align = _wgsl_type_size(m.group(1))
        stride = -(-size // align) * align
        return stride * int(m.group(2)), align
    m = re.fullmatch(r"vec([234])<\s*(\w+)\s*>", t) or re.fullmatch(r"vec([234])([fhiu])", t)
    if m:
        n = int(m.group(1))
        scalar = m.group(2) if len(m.group(2)) > 1 else {"f": "f32", "h": "f16", "i": "i32", "u": "u32"}[m.group(2)]
        s = _SCALAR_BYTES[scalar]
        return s * n, s * (4 if n == 3 else n)
    if t in _SCALAR_BYTES:
        return _SCALAR_BYTES[t], _SCALAR_BYTES[t]
    raise WebsdError(f"cannot size the WGSL workgroup variable type {t!r}; teach pipeline/webgpu/limits.py "
                     "its size")


def wgsl_kernels(source: str) -> list[KernelUse]:
    """Per-kernel use measured from TVM's WebGPU source (``// Function: <name>`` sections, one kernel each)."""
    parts = _KERNEL_SPLIT.split(source)
    sections: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        sections[name] = sections.get(name, "") + body  # TVM prints the header twice around a separator
    kernels = []
    for name, body in sections.items():
        if "@compute" not in body:
            continue
        ws = re.search(r"@workgroup_size\(\s*([^)]*)\)", body)
        dims = [int(v.strip().rstrip("iu")) for v in ws.group(1).split(",")] if ws else [1]
        dims = (dims + [1, 1, 1])[:3]
        storage = sum(-(-_wgsl_type_size(t)[0] // 16) * 16
                      for t in re.findall(r"var<workgroup>\s*\w+\s*:\s*([^;]+);", body))
        kernels.append(KernelUse(name=name, storage_buffers=len(re.findall(r"var<storage\b", body)),
                                 workgroup_size=tuple(dims), workgroup_storage=storage))
    return kernels


def with_overrides(use: ModuleUse, overrides: dict[str, str]) -> ModuleUse:
    """``use`` with each kernel that has a WGSL override ({entry point: source}: the subgroup-matrix kernels, which
    the page runs in place of TVM's twins) measured from that source instead, on the twin's grid."""
    measured = {k.name: k for entry, wgsl in overrides.items() for k in wgsl_kernels(f"// Function: {entry}\n{wgsl}")}
    return ModuleUse([replace(measured[k.name], workgroups=k.workgroups) if k.name in measured else k
                      for k in use.kernels], dict(use.buffers))


def dispatched_workgroups(grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """The dispatch tvmjs makes for a launch grid: blockIdx.x >= 65536 is folded into z (web/src/webgpu.ts)."""
    x, y, z = grid
    while x >= 1 << 16:
        x = (x + 1) // 2
        z *= 2
    return x, y, z


def attach_grids(kernels: list[KernelUse], grids: dict[str, tuple[int, int, int]]) -> None:
    """Give each kernel the launch grid of the PrimFunc it came from (kernel ``<func>_kernel[_n]``)."""
    for k in kernels:
        base = re.sub(r"_kernel(_\d+)?$", "", k.name)
        if base in grids:
            k.workgroups = dispatched_workgroups(grids[base])


# --- checking ---------------------------------------------------------------------------------------------------

_FIX = {
    "maxStorageBuffersPerShaderStage": "compile splits fused kernels to fit this limit, so this one cannot be "
                                       "split further",
    "maxComputeWorkgroupStorageSize": "the kernel's schedule uses too much shared memory",
    "maxComputeWorkgroupsPerDimension": "the kernel's launch grid is too large",
    "maxStorageBufferBindingSize": "a tensor is too large to bind; slice the op that makes it (e.g. attention)",
    "maxBufferSize": "a tensor is too large to allocate; slice the op that makes it (e.g. attention)",
}


def violations(use: ModuleUse, limits: dict[str, int]) -> list[str]:
    """Every way the module breaks ``limits``, as phrases naming the kernel or buffer, the limit and the value."""
    found = []
    for k in use.kernels:
        for name, value in k.limits().items():
            if value > limits[name]:
                found.append((name, f"kernel {k.name} needs {name} {value} (limit {limits[name]})"))
    for desc, nbytes in use.buffers.items():
        for name in ("maxStorageBufferBindingSize", "maxBufferSize"):
            if nbytes > limits[name]:
                found.append((name, f"buffer {desc} has {nbytes} bytes, over {name} {limits[name]}"))
        if nbytes % 4:
            found.append(("alignment", f"buffer {desc} has {nbytes} bytes, not a multiple of 4 (WebGPU binds "
                                       "storage buffers in multiples of 4 bytes)"))
    return [f"{what}; {_FIX.get(name, 'pad the tensor to a multiple of 4 bytes')}" for name, what in found]


def check(sub: str, use: ModuleUse, profile_name: str) -> None:
    """Raise a one-line WebsdError naming the first violation (and how many more) of the profile's limits."""
    found = violations(use, profile(profile_name))
    if found:
        more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
        fits = [p for p in PROFILES if p != profile_name and not violations(use, PROFILES[p])]
        alt = (f"; or build for larger limits with webgpu.limits={fits[0]} (fewer browsers can run it)" if fits
               else "")
        raise WebsdError(f"{sub}: the WebGPU build breaks the {profile_name!r} limits profile: {found[0]}{more}"
                         f"{alt}")
