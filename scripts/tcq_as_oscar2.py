#!/usr/bin/env python3
"""Issue 15 experiment: a CPU llama.cpp build whose oscar2 blocks hold the bitshift-trellis code (native/oscar_tcq.c,
the same 18 bytes per 64 elements) instead of the scalar Lloyd-Max code, so every door (the f16 tier, the
calibration, the CPU tier attention) runs unchanged on the new codes and llama-perplexity measures what the trellis
buys. The build uses a copy of native/ in which oscar2's row functions and its K.Q dot read the trellis; nothing is
installed.

    python3 scripts/tcq_as_oscar2.py [BUILD_DIR]

prints the folder of its llama-perplexity. Only the CPU path is switched (the CUDA kernels still read scalar codes).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_llama import cache_dir, cmake_args  # noqa: E402

SWITCH = """
// tcq_as_oscar2.py: oscar2's rows hold the trellis code
#include "oscar_tcq.c"
void oscar2_quantize_row(const float * x, void * y, int64_t n) { oscar_tcq_quantize_row(x, y, n); }
void oscar2_dequantize_row(const void * x, float * y, int64_t n) { oscar_tcq_dequantize_row(x, y, n); }
size_t oscar2_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix) {
    (void) imatrix;
    oscar_tcq_quantize_row(src, dst, nrows * n_per_row);
    return (size_t)(nrows * n_per_row / OSCAR_QK) * OSCAR2_BLOCK_BYTES;
}
"""
# ggml-cpu's K.Q dot (upstream's flash attention without a tier calls it; the tier attention decodes rows instead)
DOT_SWITCH = """
// tcq_as_oscar2.py: oscar2's K.Q dot reads the trellis code
#include "oscar_tcq_block.h"
void oscar2_vec_dot_f32(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc) {
    (void) bs; (void) bx; (void) by; (void) nrc;
    const float * cb = oscar_tcq_codebook();
    const uint8_t * in = (const uint8_t *) x;
    const float * yf = (const float *) y;
    float sum = 0.0f;
    for (int ib = 0; ib < n / OSCAR_QK; ib++) {
        const uint8_t * b = in + ib * OSCAR2_BLOCK_BYTES;
        float acc = 0.0f;
        for (int j = 0; j < OSCAR_QK; j++) acc += cb[oscar_tcq_window(b + 2, j)] * yf[ib * OSCAR_QK + j];
        sum += oscar_half_to_float(oscar_block_scale(b)) * acc;
    }
    *s = sum;
}
"""


def switch(path: Path, line: str, code: str) -> None:
    src = path.read_text()
    if line not in src:
        raise SystemExit(f"{path.name} no longer has {line.strip()!r}: update this script")
    path.write_text(src.replace(line, "") + code)


def native_copy(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT / "native", dest)
    switch(dest / "oscar.c", "OSCAR_ROW_FUNCS(2)\n", SWITCH)
    switch(dest / "oscar_dot.c", "OSCAR_DOT_FUNC(2)\n", DOT_SWITCH)


def main() -> int:
    build = Path(sys.argv[1]) if len(sys.argv) > 1 else cache_dir() / "build" / "tcq2-cpu"
    tree = cache_dir() / "src" / "llama-cpp-python" / "vendor" / "llama.cpp"
    if not (tree / "CMakeLists.txt").exists():
        raise SystemExit(f"no patched llama.cpp tree at {tree} (run ./install.sh first)")
    native = build.with_name(build.name + "-native")
    native_copy(native)
    args = [a for a in cmake_args(cuda=False, tools=True) if not a.startswith("-DOSCAR_NATIVE_DIR=")]
    subprocess.run(["cmake", "-S", str(tree), "-B", str(build), "-G", "Ninja", *args, f"-DOSCAR_NATIVE_DIR={native}"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-perplexity"], check=True)
    print(build / "bin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
