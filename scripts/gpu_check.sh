#!/usr/bin/env bash
# Run on the GPU machine (device tool, carry .carry): build the patched llama.cpp with CUDA from the bundle
# written by scripts/gpu_bundle.py, then run test-backend-ops on CUDA0 for the OScaR cases.
# Logs go to $OUT (or ./gpu-out). Usage: bash scripts/gpu_check.sh [cuda-archs]
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
archs=${1:-90}
work=/tmp/oscar-gpu; mkdir -p $work
[ -d $work/llama.cpp ] || tar xzf .carry/llama-src.tar.gz -C $work
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
cmake -S $work/llama.cpp -B $work/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$archs" -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DGGML_CUDA_FA_QUANTS="$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import build_llama; print(build_llama.CUDA_FA_QUANTS)')" \
    -DOSCAR_NATIVE_DIR="$PWD/native" > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
time cmake --build $work/build -j "$(nproc)" --target test-backend-ops llama-bench > "$out/build.log" 2>&1 \
    || { grep -E "error|Error" "$out/build.log" | head -40; exit 1; }
$work/build/bin/test-backend-ops -b CUDA0 -p oscar > "$out/test-backend-ops-cuda.log" 2>&1
echo "test-backend-ops rc=$?"
bash scripts/gpu_summary.sh "$out/test-backend-ops-cuda.log" "$out/gpu.txt" | tee "$out/summary.md"
