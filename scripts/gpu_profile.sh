#!/usr/bin/env bash
# GPU machine, one device call (carry .carry/src): build test-backend-ops with CUDA from the bundle and profile the
# flash-attention decode kernel at 128K context with Nsight Compute for the given KV types.
# Usage: bash scripts/gpu_profile.sh [types, default "q4_0 oscar2 oscar3"]; output in $OUT/profile.txt
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
W=/root/oscar-prof; mkdir -p $W
[ -d $W/llama-cpp-python ] || tar xzf .carry/src/llama-src.tar.gz -C $W
quants=$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import build_llama; print(build_llama.CUDA_FA_QUANTS)')
cmake -S $W/llama-cpp-python/vendor/llama.cpp -B $W/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA_QUANTS="$quants" -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=ON \
    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DOSCAR_NATIVE_DIR="$PWD/native" \
    > "$out/configure.log" 2>&1 || { tail -20 "$out/configure.log"; exit 1; }
cmake --build $W/build -j "$(nproc)" --target test-backend-ops > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
for t in ${1:-q4_0 oscar2 oscar3}; do
    echo "=== $t" | tee -a "$out/profile.txt"
    ncu --kernel-name regex:flash_attn_ext_vec -c 1 --section SpeedOfLight --section LaunchStats --section Occupancy \
        --section WarpStateStats --section SchedulerStats \
        $W/build/bin/test-backend-ops perf -b CUDA0 -o FLASH_ATTN_EXT -p "kv=131072.*type_K=$t," 2>&1 \
        | grep -vE "^==PROF==|^\s*$" | tail -80 >> "$out/profile.txt"
done
cat "$out/profile.txt" | grep -E "===|Duration|Throughput|Registers|Achieved Occupancy|Stall|Issued Warp|No Eligible|Local" | head -80
