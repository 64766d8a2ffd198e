#!/usr/bin/env python3
"""Microseconds per 64-element block of each OScaR type's encoder, decoder and K.Q dot, for one or more builds of
liboscar side by side (one thread, N(0,1) blocks; the same rows for every build).

    python3 scripts/tcq_speed.py [--lib NAME=PATH ...] [--blocks 20000] [--repeat 5]

Without --lib it times the installed liboscar. A build from before the trellis (oscar2 scalar) answers through the
same C API (oscar_quantize_row / oscar_dequantize_row / oscar_dot_row with bits 2, 3, 4), so one run compares
oscar2's trellis with the code it replaced. Prints the best of --repeat runs (time.perf_counter) per call and the
CPU time of that run (time.process_time), which a busy machine inflates less.
"""
from __future__ import annotations

import argparse
import time

import cffi
import numpy as np

from oscar_gguf import _native


def best_of(fn, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - w, time.process_time() - c))
    return min(runs)


def load(path: str | None):
    if path is None:
        return _native.lib()
    ffi = cffi.FFI()
    ffi.cdef(_native._cdef(_native._header_text()))
    return ffi, ffi.dlopen(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", action="append", default=[], help="NAME=PATH of a liboscar build (repeatable)")
    ap.add_argument("--blocks", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    libs = [tuple(s.split("=", 1)) for s in a.lib] or [("installed", None)]
    x = np.random.default_rng(0).standard_normal((a.blocks, 64)).astype(np.float32)
    print(f"{a.blocks} blocks of 64, best of {a.repeat}: us/block wall (cpu)")
    print(f"{'build':12s} {'type':7s} {'encode':>16s} {'decode':>16s} {'dot':>16s}")
    for name, path in libs:
        ffi, C = load(path)
        for bits in (2, 3, 4):
            q = np.zeros(a.blocks * (2 + 8 * bits), dtype=np.uint8)
            y = np.zeros_like(x)
            xp, qp, yp = (ffi.cast(t, v.ctypes.data) for t, v in (("float *", x), ("void *", q), ("float *", y)))
            calls = [lambda: C.oscar_quantize_row(bits, xp, qp, x.size),  # in this order: decode and dot read these
                     lambda: C.oscar_dequantize_row(bits, qp, yp, x.size),
                     lambda: C.oscar_dot_row(bits, qp, xp, x.size)]
            cells = []
            for fn in calls:
                wall, cpu = best_of(fn, a.repeat)
                cells.append(f"{wall / a.blocks * 1e6:7.3f} ({cpu / a.blocks * 1e6:6.3f})")
            print(f"{name:12s} oscar{bits}  " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    main()
