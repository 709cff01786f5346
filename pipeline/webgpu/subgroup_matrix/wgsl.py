"""The WGSL side of a twin kernel: TVM's header for the twin, cut from its WGSL, and the override's source around
it."""
from __future__ import annotations

import re

from ...errors import WebsdError
from .profiles import MatrixProfile


def opaque(func):
    """A twin that FuseOps leaves alone: its override computes exactly the twin's output, so nothing may be fused
    into it (relax.transform.AnnotateTIROpPattern keeps a pattern that is already set; 8 = kOpaque)."""
    return func.with_attr("op_pattern", 8)


_ENTRY = re.compile(r"@compute\s+@workgroup_size\([^)]*\)\s*fn\s+(\w+)\s*\(")
_BINDING = re.compile(r"@binding\((\d+)\)\s+var<storage[^>]*>\s+(\w+)\s*:")


def twin_header(wgsl: str, buffers=("A", "B", "C")) -> tuple[str, str, dict[str, str]]:
    """TVM's WGSL of a twin kernel -> (everything before its entry point: enables, bindings, uniform, but not the
    twin's own workgroup variables, which would count against the override's workgroup storage; the entry point's
    name; {buffer name (A/B/C): its WGSL variable})."""
    found = _ENTRY.search(wgsl)
    if not found:
        raise WebsdError("subgroup-matrix: TVM's WGSL for a twin kernel has no @compute entry point; the WGSL "
                         "codegen changed, so pipeline/webgpu/subgroup_matrix/wgsl.py needs updating")
    header = re.sub(r"^var<workgroup>[^;]*;\n?", "", wgsl[:found.start()], flags=re.M)
    names = {}
    for _, var in _BINDING.findall(header):
        if var.removesuffix("_ptr") in buffers:
            names[var.removesuffix("_ptr")] = var
    if set(names) != set(buffers):
        raise WebsdError(f"subgroup-matrix: twin kernel {found.group(1)} binds {sorted(names)}, expected "
                         f"{', '.join(buffers)}")
    return header, found.group(1), names


def split_kernels(wgsl: str) -> dict[str, str]:
    """TVM's concatenated WGSL (inspection.webgpu_source) -> {entry point: that kernel's whole source}."""
    parts = re.split(r"^//-+\n", wgsl, flags=re.M)
    kernels = {}
    for part in parts:
        found = _ENTRY.search(part)
        if found:
            kernels[found.group(1)] = part[part.find("enable") if "enable" in part else 0:]
    return kernels


def store_lines(acc: str, dtype: str, out: str, offset: str, stride: int, profile: MatrixProfile,
                lane: str = "lane", staged_at: str = "0u") -> list[str]:
    """WGSL that writes one float32 result matrix: straight to storage, or for a float16 output through the
    workgroup's ``staged`` (one matrix of float32 per subgroup, this subgroup's at ``staged_at``), each of the
    subgroup's lanes (``lane``: its index in the subgroup) converting some of its elements."""
    if dtype == "float32":
        return [f"  subgroupMatrixStore<row_major>(&{out}, {offset}, {acc}, {stride}u);"]
    p = profile
    at = "e" if staged_at == "0u" else f"{staged_at} + e"
    return [f"  subgroupMatrixStore<row_major>(&staged, {staged_at}, {acc}, {p.n}u);",
            "  workgroupBarrier();",
            f"  for (var e = {lane}; e < {p.m * p.n}u; e += {p.subgroup_size}u) {{",
            f"    {out}[{offset} + e / {p.n}u * {stride}u + e % {p.n}u] = f16(staged[{at}]);",
            "  }",
            "  workgroupBarrier();"]


def vectorized(header: str, var: str, entry: str) -> str:
    """TVM's header with the float16 binding ``var`` retyped as 4-element vectors (the bind group is the same: a
    storage buffer either way), for kernels that read it 8 bytes at a time."""
    header, retyped = re.subn(rf"(var<storage[^>]*>\s+{var}\s*:\s*)array<f16>", r"\1array<vec4<f16>>", header)
    if retyped != 1:
        raise WebsdError(f"subgroup-matrix: twin kernel {entry} does not bind {var} as array<f16>")
    return header


def tile_copies(name: str, source: str, rows: int, per_row: int, at: str,
                threads: int) -> tuple[list[str], list[str], list[str]]:
    """WGSL that copies a tile of ``rows`` x ``per_row`` 4-element vectors from ``source`` (``vectorized``) into the
    workgroup's float16 ``{name}_tile`` (row-major) through registers, the workgroup's ``threads`` lanes a share
    each: (the register declarations; the loads of reduction step ``ks`` into them, where ``at`` is row ``r``'s
    first vector in ``source`` at that step; the stores of the registers into the tile). Loading the next step while
    the subgroups multiply the current one keeps the loads in flight."""
    count = rows * per_row
    regs, loads, stores = [], [], []
    for i in range(-(-count // threads)):
        guard = f"if (lane + {i * threads}u < {count}u) " if (i + 1) * threads > count else ""
        e = f"lane + {i * threads}u"
        regs.append(f"  var {name}_reg{i} : vec4<f16>;")
        loads.append(f"    {guard}{{ let r = ({e}) / {per_row}u; "
                     f"{name}_reg{i} = {source}[{at} + ({e}) % {per_row}u]; }}")
        stores.append(f"    {guard}{{ let at = ({e}) / {per_row}u * {per_row * 4}u + ({e}) % {per_row}u * 4u; "
                      + " ".join(f"{name}_tile[at + {c}u] = {name}_reg{i}.{x};" for c, x in enumerate("xyzw")) + " }")
    return regs, loads, stores


# the override's first lines: tvmjs packs a long grid x into (x, z), so this is the same linear block index as the
# twin's, and blocks past the real grid return
PROLOGUE = ["  let block_x = blockIdx.z * gridDim.x + blockIdx.x;",
            "  if (block_x > podArgs.packGridDimX) { return; }"]


def kernel(header: str, entry: str, profile: MatrixProfile, lines: list[str], workgroup: str = "",
           subgroups: int = 1, subgroup_ops: bool = False) -> str:
    """An override's whole source: the enables it needs, TVM's ``header`` for the twin, ``workgroup`` (its
    workgroup-memory declarations), then the entry point, ``subgroups`` subgroups per workgroup, with ``lines`` as
    its body (``blockIdx``, ``gridDim`` and ``lane`` in scope; with several subgroups also ``sid``, the subgroup's
    index, and ``sg_lane``, the lane's index in it: WGSL's builtins, so no subgroup layout is assumed).
    ``subgroup_ops``: the body calls WGSL's subgroup builtins (shuffles)."""
    enables = "enable chromium_experimental_subgroup_matrix;\n"
    if subgroups > 1 or subgroup_ops:
        enables = "enable subgroups;\n" + enables
    if "enable f16;" not in header:
        enables = "enable f16;\n" + enables
    ids = ("  @builtin(subgroup_id) sid : u32,\n  @builtin(subgroup_invocation_id) sg_lane : u32,\n"
           if subgroups > 1 else "")
    return (enables + header + workgroup + f"\n@compute @workgroup_size({subgroups * profile.subgroup_size}, 1, 1)\n"
            f"fn {entry}(\n  @builtin(workgroup_id) blockIdx : vec3<u32>,\n"
            f"  @builtin(num_workgroups) gridDim : vec3<u32>,\n{ids}"
            f"  @builtin(local_invocation_index) lane : u32\n) {{\n" + "\n".join(lines) + "\n}\n")
