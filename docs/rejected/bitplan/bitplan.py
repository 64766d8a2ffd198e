"""Per-layer bit plan (KVTuner-style; docs/bitplan.md): how much each layer's K or V costs in KL divergence when
only it drops from 4 to 3 or 2 bits, and the per-layer widths that fit a bits-per-element budget at the smallest
predicted KLD (the increases taken as additive).

Sensitivities are measured on the calibration text with the calibrated model, the default f16 tier and every
other layer at 4 bits, through llama.cpp's per-layer cache types (patches/0008, oscar_layer_types).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

BITS = (2, 3, 4)
SENS_TOKENS = 512  # a short text: one prefill per (layer, K or V, width)


@dataclass
class Plan:
    bits_k: np.ndarray     # [n_layer] code widths 2, 3 or 4
    bits_v: np.ndarray
    budget: float          # bits per element asked for
    predicted_kld: float   # the 4-bit baseline's KLD plus the plan's summed increases

    @property
    def bits_per_element(self) -> float:
        from .kvtypes import kv_type

        bpe = {b: kv_type(f"oscar{b}").bits_per_element for b in BITS}
        return float(np.mean([bpe[int(b)] for b in np.concatenate([self.bits_k, self.bits_v])]))


def layer_types(bits_k, bits_v) -> list[int]:
    """llama_context_params.oscar_layer_types: every layer's K type, then every layer's V type."""
    from .kvtypes import kv_type

    return [kv_type(f"oscar{int(b)}").ggml_type for b in (*bits_k, *bits_v)]


def choose(sens: np.ndarray, base_kld: float, budget: float) -> Plan:
    """The widths with the smallest summed KLD increase whose mean bits per element is at most `budget`.
    sens: [2 (K, V), 3 (widths 2, 3, 4), n_layer] increases over the all-4-bit cache (the 4-bit row is 0).
    Exact: a knapsack over the total code width (every K or V of a layer has the same number of elements)."""
    from .kvtypes import kv_type

    items = sens.shape[0] * sens.shape[2]
    cost = sens.transpose(0, 2, 1).reshape(items, len(BITS))  # item = (K or V, layer)
    overhead = kv_type("oscar2").bits_per_element - 2          # per-block scale bits, the same for every width
    cap = int(np.floor((budget - overhead) * items + 1e-9))     # total code bits allowed
    if cap < 2 * items:
        lo = kv_type("oscar2").bits_per_element
        raise ValueError(f"budget {budget} bits per element is below the smallest plan's {lo}")
    cap = min(cap, 4 * items)
    inf = float("inf")
    best = np.full(cap + 1, inf)
    best[0] = 0.0
    pick = np.zeros((items, cap + 1), dtype=np.int8)
    for i in range(items):
        nxt = np.full(cap + 1, inf)
        for j, b in enumerate(BITS):
            shifted = np.full(cap + 1, inf)
            shifted[b:] = best[:cap + 1 - b] + max(cost[i, j], 0.0)  # a negative increase is noise: no gain
            better = shifted < nxt
            nxt[better], pick[i, better] = shifted[better], j
        best = nxt
    total = int(np.argmin(best))
    widths = np.zeros(items, dtype=np.int64)
    for i in range(items - 1, -1, -1):
        j = pick[i, total]
        widths[i] = BITS[j]
        total -= BITS[j]
    widths = widths.reshape(sens.shape[0], sens.shape[2])
    return Plan(widths[0], widths[1], budget, base_kld + float(np.min(best)))


def measure(model: os.PathLike, n_layer: int, tokens: int = SENS_TOKENS, threads: int | None = None,
            progress: bool = True) -> tuple[np.ndarray, float]:
    """([2, 3, n_layer] KLD increases, the all-4-bit KLD) of `model` (calibrated: the plan is used calibrated)."""
    import llama_cpp
    from tqdm import tqdm

    from . import llamalog
    from .calibrate import calibration_text
    from .evaluate import log_softmax
    from .kvtypes import kv_type

    four = kv_type("oscar4").ggml_type
    common = dict(model_path=str(model), n_ctx=tokens, n_batch=tokens, n_ubatch=tokens, flash_attn=True,
                  logits_all=True, verbose=False, n_threads=threads, n_threads_batch=threads)

    def logprobs(**kw) -> np.ndarray:
        with llamalog.capture():
            llm = llama_cpp.Llama(**common, **kw)
        try:
            llm.eval(toks)
            return log_softmax(np.array(llm.scores[:tokens], dtype=np.float64))[tokens // 2:]
        finally:
            llm.close()

    with llamalog.capture():
        probe = llama_cpp.Llama(model_path=str(model), n_ctx=64, vocab_only=True, verbose=False)
    toks = [probe.token_bos()] + probe.tokenize(calibration_text(None).text.encode(), add_bos=False)[:tokens - 1]
    probe.close()
    if len(toks) < tokens:
        raise ValueError(f"the calibration text has {len(toks)} tokens, the sensitivity needs {tokens}")
    ref = logprobs()

    def kld(lp: np.ndarray) -> float:
        return float((np.exp(ref) * (ref - lp)).sum(-1).mean())

    from .chat import DEFAULT_SINKS, DEFAULT_WINDOW

    tier = dict(type_k=four, type_v=four, oscar_sinks=DEFAULT_SINKS, oscar_window=DEFAULT_WINDOW)
    base = kld(logprobs(**tier))
    sens = np.zeros((2, len(BITS), n_layer))
    runs = [(kv, j, il) for kv in range(2) for j, b in enumerate(BITS) if b != 4 for il in range(n_layer)]
    for kv, j, il in tqdm(runs, desc="layer sensitivity", file=sys.stderr, disable=not progress):
        bits = np.full((2, n_layer), 4)
        bits[kv, il] = BITS[j]
        sens[kv, j, il] = kld(logprobs(**tier, oscar_layer_types=layer_types(bits[0], bits[1]))) - base
    return sens, base
