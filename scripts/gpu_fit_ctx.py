#!/usr/bin/env python3
"""The largest context each KV cache type fits in the GPUs of this machine: a geometric bisection over n_ctx, each
step a llama_cpp.Llama with every layer offloaded and one sequence (the cache allocated, nothing decoded).

    python3 scripts/gpu_fit_ctx.py MODEL OUT.json [--types f16,q4_0,oscar3,oscar2] [--split layer|row|none]
"""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm


def fits(model: str, n_ctx: int, kv: str, split: int) -> bool:
    import llama_cpp

    try:
        llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_batch=512, n_gpu_layers=-1, split_mode=split,
                              type_k=kv, type_v=kv, flash_attn=True, verbose=False)
    except (ValueError, RuntimeError):
        return False
    llm.close()
    return True


def largest(model: str, kv: str, split: int, lo: int = 4096, hi: int = 1 << 27) -> int:
    """The largest n_ctx (a multiple of 256, within 1 %) that fits; lo must fit."""
    assert fits(model, lo, kv, split), f"{kv}: not even {lo} tokens fit"
    with tqdm(desc=f"fit {kv}", unit="step") as bar:
        while hi > lo * 1.01:
            mid = int((lo * hi) ** 0.5) // 256 * 256
            if mid <= lo:
                break
            lo, hi = (mid, hi) if fits(model, mid, kv, split) else (lo, mid)
            bar.update()
            bar.set_postfix(lo=lo, hi=hi)
    return lo


def main() -> int:
    import llama_cpp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--types", default="f16,q4_0,oscar3,oscar2")
    ap.add_argument("--split", default="layer", choices=["layer", "row", "none"])
    a = ap.parse_args()
    split = {"layer": llama_cpp.LLAMA_SPLIT_MODE_LAYER, "row": llama_cpp.LLAMA_SPLIT_MODE_ROW,
             "none": llama_cpp.LLAMA_SPLIT_MODE_NONE}[a.split]
    out = {"model": a.model, "split": a.split, "devices": llama_cpp.llama_max_devices(), "n_ctx": {}}
    for kv in a.types.split(","):
        out["n_ctx"][kv] = largest(a.model, kv, split)
        print(f"{kv}: {out['n_ctx'][kv]} tokens", flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
