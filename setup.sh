#!/usr/bin/env bash
# One idempotent setup for a fresh Debian machine: Debian packages, a venv with pinned Python packages, npm packages.
# Everything comes from the package registries by name. Re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# libvulkan1 + libllvm15: the Vulkan loader Dawn (npm webgpu) opens, and what the lavapipe driver below links to;
# g++: TVM links the CPU build that verify_* runs with it
APT_PACKAGES=(git emscripten chromium llvm-19-dev libpolly-19-dev ccache zlib1g-dev libzstd-dev libxml2-dev
              libvulkan1 libllvm15 xz-utils ca-certificates g++)
command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
# a bare Debian (the Containerfile's base) has no Python yet
command -v "${PYTHON:-python3}" >/dev/null 2>&1 || APT_PACKAGES+=(python3 python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first, by version and without dependencies: the local CPU build where a wheel folder has it (an unpinned torch
# would pull GBs of CUDA wheels). Its file is not the registry's, so it is the one package installed unchecked
# (requirements.lock says why); its dependencies come with the rest, below.
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
    || pip install --no-deps torch==2.13.0
# every other package: exactly the files requirements.lock names, each checked against its sha256; nothing resolved
# on the fly (--no-deps: the lock lists the dependencies of our dependencies too)
pip install --require-hashes --no-deps -r requirements.lock
# this project itself, built with the locked setuptools (no build environment fetched unchecked)
pip install --no-deps --no-build-isolation -e .
# apache-tvm and apache-tvm-ffi follow the single tvm.version setting (pipeline/toolchain/versions.py): the lock has the default
# version's wheels, so this installs something only for another tvm.version (then by version, not hash)
TVM_REQ=$(.venv/bin/python -c "from pipeline.config import load_config; from pipeline.toolchain.versions import wheel_requirement; print(wheel_requirement(load_config().tvm.version))")
[ -z "$TVM_REQ" ] || pip install --no-deps $TVM_REQ

# A software Vulkan driver that Dawn accepts, for the headless GPU runner on machines without a GPU (CI): Dawn
# rejects Debian 12's lavapipe (Mesa 22), so Mesa >= 25 comes from the release's backports suite, unpacked privately
# into .venv/lavapipe (nothing system-wide changes); web/runner and its tests point VK_ICD_FILENAMES at its ICD file.
# The Debian archive this machine already uses (deb822 "URIs:" or a one-line "deb" entry), not a hard-coded host;
# empty when there is none (|| true: a fresh debootstrap has no sources.list.d files, and pipefail would end setup.sh
# here silently).
debian_archive() {
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2; exit}' || true)
    [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v security | sed -E 's/^deb (\[[^]]*\] )?([^ ]+).*/\2/' | head -1 || true)
    echo "$uri"
}

install_lavapipe() {
    local dir=$PWD/.venv/lavapipe codename uri tmp
    [ -f "$dir/lvp_icd.json" ] && return 0
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    uri=$(debian_archive)
    if [ -z "$codename" ] || [ -z "$uri" ]; then
        echo "setup: no Debian release or archive found in the apt sources; skipping lavapipe (GPU runner tests skip)"
        return 0
    fi
    tmp=$(mktemp -d)
    mkdir -p "$tmp/lists/partial"
    echo "deb $uri $codename-backports main" > "$tmp/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
                    -o "Dir::State::Lists=$tmp/lists" -o APT::Sandbox::User=root)
    if apt-get "${apt_opts[@]}" update -q >/dev/null && \
       (cd "$tmp" && apt-get "${apt_opts[@]}" download "mesa-vulkan-drivers/$codename-backports" >/dev/null); then
        rm -rf "$dir" && mkdir -p "$dir"
        dpkg -x "$tmp"/mesa-vulkan-drivers_*.deb "$dir/root"
        .venv/bin/python - "$dir" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
icd = json.loads(next((d / "root/usr/share/vulkan/icd.d").glob("lvp_icd*.json")).read_text())
icd["ICD"]["library_path"] = str(next((d / "root/usr/lib").rglob("libvulkan_lvp.so")))
(d / "lvp_icd.json").write_text(json.dumps(icd))
PY
        echo "setup: lavapipe from $codename-backports in $dir"
    else
        echo "setup: mesa-vulkan-drivers from $codename-backports is not available; GPU runner tests will skip"
    fi
    rm -rf "$tmp"
}
install_lavapipe

# A second software Vulkan driver, for the subgroup-matrix kernels (WebGPU's chromium-experimental-subgroup-matrix,
# issue 20): Dawn offers that feature where Vulkan has VK_KHR_cooperative_matrix, which lavapipe has from Mesa 26. The
# release after Debian 12 backports it, built against that release's C library, so the driver, its libraries and
# that release's dynamic loader are unpacked together into .venv/lavapipe-sm, and .venv/lavapipe-sm/bin/node runs
# Node through that loader with the driver selected. Nothing system-wide changes; tests that need it skip without it.
SM_RELEASE=trixie
SM_LIBS=(libc6 libvulkan1 libllvm19 libstdc++6 libgcc-s1 libdisplay-info2 libwayland-client0 libelf1t64 libdrm2
         libdrm-amdgpu1 libpng16-16t64 libexpat1 libzstd1 zlib1g libxml2 libffi8 libedit2 libz3-4 libtinfo6 libbsd0
         libmd0 libicu76 liblzma5 libx11-6 libx11-xcb1 libxcb1 libxcb-dri3-0 libxcb-present0 libxcb-randr0
         libxcb-shm0 libxcb-sync1 libxcb-xfixes0 libxshmfence1 libxau6 libxdmcp6)
install_lavapipe_sm() {
    local dir=$PWD/.venv/lavapipe-sm uri tmp node
    [ -x "$dir/bin/node" ] && return 0
    node=$(command -v node) || return 0
    uri=$(debian_archive)
    [ -n "$uri" ] || { echo "setup: no Debian archive in the apt sources; skipping lavapipe-sm"; return 0; }
    tmp=$(mktemp -d)
    mkdir -p "$tmp/lists/partial" "$tmp/deb"
    printf 'deb %s %s main\ndeb %s %s-backports main\n' "$uri" "$SM_RELEASE" "$uri" "$SM_RELEASE" > "$tmp/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
                    -o "Dir::State::Lists=$tmp/lists" -o APT::Sandbox::User=root -o APT::Architecture=amd64)
    if [ "$(dpkg --print-architecture)" = amd64 ] && apt-get "${apt_opts[@]}" update -q >/dev/null && \
       (cd "$tmp/deb" && apt-get "${apt_opts[@]}" download "mesa-vulkan-drivers/$SM_RELEASE-backports" \
            "${SM_LIBS[@]}" >/dev/null); then
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/bin"
        for deb in "$tmp"/deb/*.deb; do dpkg -x "$deb" "$dir.tmp/root"; done
        rm -rf "$dir.tmp/root/usr/share"  # docs, locales and data Node and the driver do not read
        local lib=$dir/root/usr/lib/x86_64-linux-gnu
        printf '{"file_format_version": "1.0.1", "ICD": {"library_path": "%s/libvulkan_lvp.so", "api_version": "1.4.0"}}\n' \
            "$lib" > "$dir.tmp/lvp_icd.json"
        cat > "$dir.tmp/bin/node" <<SH
#!/bin/sh
# Node with Dawn on lavapipe from Mesa 26 (VK_KHR_cooperative_matrix), through $SM_RELEASE's C library (setup.sh)
export VK_ICD_FILENAMES=$dir/lvp_icd.json XDG_RUNTIME_DIR=\${XDG_RUNTIME_DIR:-/tmp}
exec $dir/root/usr/lib64/ld-linux-x86-64.so.2 --library-path $lib:$dir/root/lib/x86_64-linux-gnu $node "\$@"
SH
        chmod +x "$dir.tmp/bin/node"
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        echo "setup: lavapipe with subgroup matrices (Mesa from $SM_RELEASE-backports) in $dir"
    else
        echo "setup: Mesa from $SM_RELEASE-backports is not available; subgroup-matrix kernel tests will skip"
    fi
    rm -rf "$tmp"
}
install_lavapipe_sm

if [ -f web/package.json ]; then
    # exactly web/package-lock.json, each package checked against its integrity hash (npm ci never edits the lock)
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: done"
