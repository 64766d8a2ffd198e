#!/usr/bin/env python3
"""Blocks per second of the bitshift-trellis encoder and decoder (oscar_tcq_quantize_row / _dequantize_row)
against oscar2's scalar quantizer and dequantizer, through liboscar (one thread, N(0,1) blocks of 64).

    OSCAR_NATIVE_LIB=/tmp/libosc-tcq/liboscar.so python3 scripts/tcq_speed.py [--blocks 20000] [--repeat 5]

Prints the best of --repeat runs (time.perf_counter) per call, and the CPU time of that run (time.process_time),
which a busy machine inflates less.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from oscar_gguf._native import lib


def best_of(fn, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - w, time.process_time() - c))
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    ffi, C = lib()
    x = np.random.default_rng(0).standard_normal((a.blocks, 64)).astype(np.float32)
    q = np.zeros(a.blocks * 18, dtype=np.uint8)
    y = np.zeros_like(x)
    xp, qp, yp = (ffi.cast(t, v.ctypes.data) for t, v in (("float *", x), ("void *", q), ("float *", y)))
    calls = {
        "trellis encode": lambda: C.oscar_tcq_quantize_row(xp, qp, x.size),
        "trellis decode": lambda: C.oscar_tcq_dequantize_row(qp, yp, x.size),
        "oscar2 quantize": lambda: C.oscar_quantize_row(2, xp, qp, x.size),
        "oscar2 dequantize": lambda: C.oscar_dequantize_row(2, qp, yp, x.size),
    }
    print(f"{a.blocks} blocks of 64, best of {a.repeat}")
    for name, fn in calls.items():  # in this order, each decoder reads its own encoder's blocks
        wall, cpu = best_of(fn, a.repeat)
        print(f"{name:18s} {a.blocks / wall:12.0f} blocks/s  {wall / a.blocks * 1e6:8.3f} us/block"
              f"  (cpu {cpu / a.blocks * 1e6:.3f} us/block)")


if __name__ == "__main__":
    main()
