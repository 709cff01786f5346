"""What each supported TVM version needs. Moving to another TVM release is a one-line change of
``tvm.version`` plus, where its API differs, an entry here."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import WebsdError


@dataclass(frozen=True)
class TvmRelease:
    # apache-tvm-ffi release whose sdist stands in for the 3rdparty/tvm-ffi submodule when its remote is unreachable
    # (None: that TVM has no tvm-ffi submodule).
    tvm_ffi: str | None
    # True when PyPI has an apache-tvm wheel of exactly this version (0.25.0 .. 0.27.0.post1).
    has_wheel: bool
    # the wheel's version string, when it differs from the tag's (e.g. post releases)
    wheel_version: str | None = None
    # submodules a source build and the web runtime need besides 3rdparty/tvm-ffi (which has its own sdist fallback);
    # offline they come from tvm.submodule_mirrors
    submodules: tuple[str, ...] = ()
    # upstream apache/tvm commits applied on top of the tag by tvm_checkout (fetched from the TVM remote, never
    # stored here), e.g. fixes a release needs to build with the LLVM this project installs
    backports: tuple[str, ...] = ()
    # this project's own patches (files in pipeline/toolchain/tvm_patches/), applied after the backports, for release bugs
    # that no single upstream commit fixes
    patches: tuple[str, ...] = ()
    # link LLVM statically (`llvm-config --link-static`). v0.21's FindLLVM.cmake then links Debian's libzstd.a,
    # which is not position-independent: libtvm.so fails to link ("relocation ... recompile with -fPIC"); the
    # shared libLLVM-19.so has no such system libs.
    llvm_static: bool = True


RELEASES: dict[str, TvmRelease] = {
    "0.26.0": TvmRelease(tvm_ffi="0.1.14.post0", has_wheel=True),
    "0.27.0": TvmRelease(tvm_ffi="0.1.15.post2", has_wheel=True, wheel_version="0.27.0.post1"),
    # v0.21.0: FFI in-tree (ffi/). Two upstream fixes, both first released in v0.22.0, are backported:
    # - 351dd8061b (#18123): codegen_llvm.cc uses an LLVM-20-only insertDeclare overload under
    #   `TVM_LLVM_VERSION >= 190`, so v0.21.0 does not build with llvm-19;
    # - 3b60f1c9b8 (#18168): web/src/runtime.ts still requires a TVMFuncFree export and the runtime.Array* globals
    #   that v0.21.0's new FFI no longer has (it registers ffi.Array*), so no page could load a v0.21.0 model.
    # And one patch of ours: web/src/webgpu.ts's deviceCopyToGPU zeroed every host-to-GPU copy whose size is not a
    # multiple of 4 bytes (it padded into a fresh array and then copied that array onto itself), so a float16
    # scalar constant (the attention scale) reached the GPU as 0. Upstream fixed it inside #18871 (v0.24), a large
    # rewrite of the WebGPU runtime that does not apply to v0.21.
    "0.21.0": TvmRelease(tvm_ffi=None, has_wheel=False,
                         submodules=("3rdparty/dlpack", "3rdparty/dmlc-core", "3rdparty/rang", "ffi/3rdparty/dlpack"),
                         backports=("351dd8061bf0055ec369c2f94d91b86eb3196349",
                                    "3b60f1c9b8907dcf5d39a033876020e96e6915b2"),
                         patches=("v0.21.0-webgpu-copy-padding.patch",), llvm_static=False),
}


def release(version: str) -> TvmRelease:
    try:
        return RELEASES[version]
    except KeyError:
        raise WebsdError(
            f"tvm.version {version!r} is not in pipeline/toolchain/versions.py RELEASES ({', '.join(RELEASES)}); add an entry"
        ) from None


def wheel_requirement(version: str) -> str:
    """The pip requirement setup.sh installs for this TVM version ('' when it must be built from source)."""
    rel = release(version)
    if not rel.has_wheel:
        return ""
    reqs = [f"apache-tvm=={rel.wheel_version or version}"]
    if rel.tvm_ffi:
        reqs.append(f"apache-tvm-ffi=={rel.tvm_ffi}")
    return " ".join(reqs)
