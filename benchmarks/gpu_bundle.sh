#!/usr/bin/env bash
# Run benchmarks/bench_webgpu.py on a GPU machine that has Python, torch and CUDA but no Node, no diffusers, no
# Vulkan loader and no network (the H200 lent to this project). Two steps:
#
#   benchmarks/gpu_bundle.sh pack BUNDLE SITE...   here: Node, Dawn (npm webgpu), the tokenizer package, the Vulkan
#                                                  loader, the Python wheels the machine lacks, and each SITE without
#                                                  its weight shards (made again there from the model's seed);
#                                                  SITE is a directory or LABEL=DIR (default label: model-dtype)
#   benchmarks/gpu_bundle.sh run BUNDLE OUT [bench_webgpu.py args...]
#                                                  there, from the repo root: unpack and run; results in OUT
#                                                  (--peer ort adds ONNX Runtime's WebGPU EP on the same weights)
#                                                  (--variants all: a row per compiled variant the GPU runs)
#
# Sizes: Node ~24 MB and dawn.node ~5 MB compressed; SD v1.5's .wasm files ~2-3 MB each compressed.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(diffusers==0.42.1 transformers==5.23.0 importlib_metadata==10.2.0 regex==2026.11.19)
# The ORT peer (bench_webgpu.py --peer ort), by WEBSD_BUNDLE_ORT: "plugin" (default) carries the WebGPU EP plugin
# (7 MB), which runs on the machine's own onnxruntime (>= 1.24.4; its onnx and onnxscript export the models);
# "full" also carries requirements.lock's onnxruntime (24 MB), which may not fit beside two SD v1.5 sites in the
# 64 MiB a device call carries; "none" leaves ORT out.
case "${WEBSD_BUNDLE_ORT:-plugin}" in
    plugin) ORT_WHEELS=("$(grep -m1 -o '^onnxruntime-ep-webgpu==[^ ;\\]*' requirements.lock)") ;;
    full) ORT_WHEELS=("$(grep -m1 -o '^onnxruntime-ep-webgpu==[^ ;\\]*' requirements.lock)"
                      "$(grep -m1 -o '^onnxruntime==[^ ;\\]*' requirements.lock)") ;;
    none) ORT_WHEELS=() ;;
    *) echo "WEBSD_BUNDLE_ORT must be plugin, full or none" >&2; exit 2 ;;
esac
LIMIT_MIB=64

pack() {
    local bundle=$1; shift
    mkdir -p "$bundle/whl" "$bundle/deb" "$bundle/sites"
    # the commit the figures belong to (the GPU machine gets a copy of the tree without .git); "+dirty" if it differs
    { git rev-parse HEAD; git diff --quiet HEAD -- . ':!bundle-*' || echo "+dirty"; } 2>/dev/null | paste -sd '' \
        > "$bundle/commit" || true
    xz -T0 -6 -c "$(command -v node)" > "$bundle/node.xz"
    tar -C web -cJf "$bundle/node_modules.tar.xz" node_modules/webgpu/package.json node_modules/webgpu/index.js \
        node_modules/webgpu/dist/linux-x64 node_modules/@huggingface
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$bundle/whl" "${WHEELS[@]}" ${ORT_WHEELS[@]+"${ORT_WHEELS[@]}"}
    (cd "$bundle/deb" && apt-get download libvulkan1 libglvnd0 libglx0 libegl1 libgl1 libopengl0 libgles2 2>/dev/null)
    for site in "$@"; do
        local name=""
        if [[ $site == *=* ]]; then name=${site%%=*}; site=${site#*=}; fi
        [ -n "$name" ] || name=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("%s-%s" % (m["model"], m["dtype"]))' \
            "$site/model/manifest.json")
        tar -C "$site" --exclude='params_shard_*' -cJf "$bundle/sites/$name.tar.xz" .
    done
    # WEBSD_BUNDLE_SM_KERNELS=<profile>: the subgroup-matrix kernels, built here (the GPU machine has no TVM);
    # WEBSD_BUNDLE_SM_SWEEP=1: each at every block / attention tiling too (bench_subgroup_matrix.py --sweep);
    # WEBSD_BUNDLE_SM_OPS="TEXT;TEXT": only the ops whose key contains one of them (--ops)
    if [ -n "${WEBSD_BUNDLE_SM_KERNELS:-}" ]; then
        local ops=() texts=() text
        IFS=';' read -ra texts <<< "${WEBSD_BUNDLE_SM_OPS:-}"
        for text in ${texts[@]+"${texts[@]}"}; do ops+=(--ops "$text"); done
        .venv/bin/python benchmarks/bench_subgroup_matrix.py --profile "$WEBSD_BUNDLE_SM_KERNELS" \
            --write-kernels "$bundle/sm-kernels.json" ${WEBSD_BUNDLE_SM_SWEEP:+--sweep} ${ops[@]+"${ops[@]}"}
    fi
    du -sh "$bundle"
    local mib=$(( $(du -sk "$bundle" | cut -f1) / 1024 ))
    if [ "$mib" -ge "$LIMIT_MIB" ]; then
        echo "WARNING: the bundle is $mib MiB; a device call carries $LIMIT_MIB MiB in all" >&2
    fi
}

run() {
    local bundle=$1 out=$2; shift 2
    for deb in "$bundle"/deb/*.deb; do dpkg -x "$deb" /; done
    ldconfig
    local nv=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$nv" ] && export VK_ICD_FILENAMES=$nv
    xz -dc "$bundle/node.xz" > /tmp/node && chmod +x /tmp/node
    tar -C web -xJf "$bundle/node_modules.tar.xz"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pysite \
        "$bundle"/whl/*.whl
    export PYTHONPATH=/tmp/pysite PYTHONUNBUFFERED=1
    [ -n "${WEBSD_COMMIT:-}" ] || [ ! -s "$bundle/commit" ] || export WEBSD_COMMIT=$(cat "$bundle/commit")
    local sites=()
    for archive in "$bundle"/sites/*.tar.xz; do
        [ -e "$archive" ] || continue  # a bundle of kernels alone
        local dir=/tmp/sites/$(basename "$archive" .tar.xz)
        mkdir -p "$dir" && tar -C "$dir" -xJf "$archive"
        sites+=(--site "$dir")
    done
    mkdir -p "$out" && out=$(cd "$out" && pwd)
    if [ -f "$bundle/sm-kernels.json" ]; then  # the subgroup-matrix kernels against the default build's, one at a time
        local toggles=() args=("$@") i  # with the sites' Dawn toggles (NVIDIA's Vulkan offers shader-f16 only with one)
        for ((i = 0; i < ${#args[@]}; i++)); do
            [ "${args[i]}" != --dawn-feature ] || toggles+=(--dawn-feature "${args[i + 1]}")
        done
        # WEBSD_BUNDLE_SM_SECONDS: stop it after that long (its report keeps the ops it finished), so the sites
        # still run within the device call's limit
        timeout "${WEBSD_BUNDLE_SM_SECONDS:-0}" python3 benchmarks/bench_subgroup_matrix.py \
            --kernels "$bundle/sm-kernels.json" --node /tmp/node --results "$out" ${toggles[@]+"${toggles[@]}"} \
            || echo "gpu_bundle: the subgroup-matrix kernel benchmark failed or ran out of time (above)"
    fi
    [ -n "$(ls "$bundle"/sites 2>/dev/null)" ] || return 0
    python3 benchmarks/bench_webgpu.py "${sites[@]}" --node /tmp/node --work /tmp/bench --results "$out" "$@"
    # the pictures, to look at, in one file: a device call brings back 8 files, and the reports come first
    (cd /tmp/bench && ls run-*/image.png >/dev/null 2>&1 && tar -cf "$out/images.tar" run-*/image.png) || true
}

case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 pack BUNDLE SITE... | run BUNDLE OUT [bench_webgpu.py args]" >&2; exit 2 ;;
esac
