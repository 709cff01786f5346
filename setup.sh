#!/usr/bin/env bash
# One idempotent setup for a fresh Debian machine: Debian packages, a venv with pinned Python packages, npm packages.
# Everything comes from the package registries by name. Re-running it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(git emscripten chromium llvm-19-dev libpolly-19-dev ccache zlib1g-dev libzstd-dev libxml2-dev)
command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

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
# torch first and pinned: the local CPU build; an unpinned torch would pull GBs of CUDA wheels
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
    || pip install torch==2.13.0
pip install -e ".[test]"
# apache-tvm and apache-tvm-ffi follow the single tvm.version setting (pipeline/versions.py)
TVM_REQ=$(.venv/bin/python -c "from pipeline.config import load_config; from pipeline.versions import wheel_requirement; print(wheel_requirement(load_config().tvm.version))")
[ -z "$TVM_REQ" ] || pip install $TVM_REQ
# open-clip-torch only for its CLIP BPE vocab file; its dependencies (torchvision) have no CPU build here
pip install --no-deps open-clip-torch==3.3.0

if [ -f web/package.json ]; then
    (cd web && npm install --no-audit --no-fund --loglevel=error)
fi
echo "setup: done"
