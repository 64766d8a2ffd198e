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


DROP = 96


def shift_windows(n: int) -> list[list[int]]:
    """n texts of 336 tokens (BOS + prose) at different places of the evaluation corpus."""
    from oscar_gguf import load
    from oscar_gguf.corpus import load_corpus

    with load("smollm2", kv="f16", ctx=64) as m:
        text = m.llm.tokenize(load_corpus("eval").text.encode(), add_bos=False)
        bos = m.llm.token_bos()
    return [[bos] + text[s * 1000:s * 1000 + 335] for s in range(n)]


def kld(exact: np.ndarray, x: np.ndarray) -> float:
    from oscar_gguf.evaluate import log_softmax

    a, b = log_softmax(exact), log_softmax(x)
    return float((np.exp(a) * (a - b)).sum(-1).mean())


def shift_reference(model, windows: list[list[int]]) -> list[np.ndarray]:
    """Per window, the f16 cache's logits after dropping the first DROP cells (not moved)."""
    from oscar_gguf import load

    with load(model, kv="f16", ctx=512, logits_all=True) as ref:
        return [after_dropping(ref.llm, w, DROP, shift=False) for w in windows]


def shift_klds(model, windows: list[list[int]], exact: list[np.ndarray] | None = None,
               **load_kw) -> tuple[list[float], list[float]]:
    """Per window, the KLD against an f16 cache that dropped the same first cells (exact: shift_reference's): (kept,
    shifted), the cache not moved and moved back by DROP positions (the K-shift)."""
    from oscar_gguf import load

    exact = exact if exact is not None else shift_reference(model, windows)
    with load(model, ctx=512, logits_all=True, **load_kw) as m:
        kept = [kld(e, after_dropping(m.llm, w, DROP, shift=False)) for w, e in zip(windows, exact)]
        shifted = [kld(e, after_dropping(m.llm, w, DROP, shift=True)) for w, e in zip(windows, exact)]
    return kept, shifted
