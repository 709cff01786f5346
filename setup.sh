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
install_lavapipe() {
    local dir=$PWD/.venv/lavapipe codename uri tmp
    [ -f "$dir/lvp_icd.json" ] && return 0
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    # the Debian archive this machine already uses (deb822 "URIs:" or a one-line "deb" entry), not a hard-coded host
    # (|| true: a fresh debootstrap has no sources.list.d files, and pipefail would end setup.sh here silently)
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2; exit}' || true)
    [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v security | sed -E 's/^deb (\[[^]]*\] )?([^ ]+).*/\2/' | head -1 || true)
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

if [ -f web/package.json ]; then
    # exactly web/package-lock.json, each package checked against its integrity hash (npm ci never edits the lock)
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: done"
