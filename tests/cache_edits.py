"""Cache edits through llama-cpp-python's low-level context, shared by the llama tests."""
from __future__ import annotations

import numpy as np


def after_dropping(llm, toks: list[int], drop: int, shift: bool, tail: int = 16) -> np.ndarray:
    """Logits of the last `tail` tokens, evaluated after toks[:-tail] went into the cache, its first `drop`
    cells were removed and (if shift) the rest moved back by `drop` positions, which makes llama.cpp run
    its K-shift (re-RoPE of the cached K; for quantized K: dequantize, rotate, requantize)."""
    n = len(toks) - tail
    llm.reset()
    llm.eval(toks[:n])
    assert llm._ctx.kv_cache_seq_rm(0, 0, drop)
    if shift:
        llm._ctx.kv_cache_seq_shift(0, drop, n, -drop)
    llm.n_tokens = n - drop if shift else n
    llm.eval(toks[n:])
    return np.array(llm.scores[llm.n_tokens - tail:llm.n_tokens])
