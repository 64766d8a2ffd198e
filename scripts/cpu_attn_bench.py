#!/usr/bin/env python3
"""CPU flash attention with the f16 tier, the op alone (ggml_flash_attn_ext + ggml_flash_attn_ext_add_tier through
the installed llama_cpp's libggml): milliseconds per call at the default model's shape (head size 64, 9 query heads
over 3 KV heads, the default tier of 129 rows), one decode row and a causal batch of 512, against upstream's f16
flash attention without a tier at the same shape.

    .venv/bin/python scripts/cpu_attn_bench.py OUT.json [--depths 4096,16384] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from ggml_ops import F16, F32, Graph  # noqa: E402

D, H, HKV, TIER = 64, 9, 3, 129


def time_op(kind: str | None, n_kv: int, n_q: int, threads: int, reps: int) -> float:
    from oscar_gguf import codec
    from oscar_gguf.kvtypes import kv_type

    rng = np.random.default_rng(0)
    with Graph(mem=1 << 30) as g:
        q = g.tensor(F32, rng.normal(0, 1, (H, n_q, D)).astype(np.float32), (D, n_q, H, 1))
        k, v = rng.normal(0, 1, (2, HKV, n_kv, D))
        if kind:
            t = kv_type(kind).ggml_type
            kt, vt = g.tensor(t, codec.quantize(k, kind), (D, n_kv, HKV, 1)), g.tensor(t, codec.quantize(v, kind), (D, n_kv, HKV, 1))
        else:
            kt, vt = g.tensor(F16, k.astype(np.float16), (D, n_kv, HKV, 1)), g.tensor(F16, v.astype(np.float16), (D, n_kv, HKV, 1))
        mask = np.zeros((n_q, n_kv), dtype=np.float16)
        for i in range(n_q):  # causal: query i sees the first n_kv - n_q + i + 1 rows
            mask[i, n_kv - n_q + i + 1:] = -np.inf
        out = g.base.ggml_flash_attn_ext(g.ctx, q, kt, vt, g.tensor(F16, mask, (n_kv, n_q, 1, 1)), 0.125, 0.0, 0.0)
        if kind:
            m2 = np.zeros((n_q, TIER), dtype=np.float16)
            g.base.ggml_flash_attn_ext_add_tier(
                out, g.tensor(F16, rng.normal(0, 1, (HKV, TIER, D)).astype(np.float16), (D, TIER, HKV, 1)),
                g.tensor(F16, rng.normal(0, 1, (HKV, TIER, D)).astype(np.float16), (D, TIER, HKV, 1)),
                g.tensor(F16, m2, (TIER, n_q, 1, 1)))
        g.compute(out, threads)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            g.compute(out, threads)
            best = min(best, time.perf_counter() - t0)
        return best * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--depths", default="4096,16384")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rows = []
    for depth in map(int, a.depths.split(",")):
        for n_q, reps in ((1, 20), (512, 2)):
            for kind in (None, "oscar2", "oscar3"):
                ms = time_op(kind, depth, n_q, a.threads, reps)
                rows.append({"cache": kind or "f16 (no tier)", "depth": depth, "n_q": n_q, "ms": ms})
                print(f"depth {depth} n_q {n_q} {kind or 'f16'}: {ms:.3f} ms", flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
