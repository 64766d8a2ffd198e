#!/usr/bin/env python3
"""The f16 tier on the GPU, decode against prefill: with every layer offloaded, a prompt evaluated as one batch (the
tier attended beside the batch: the f16 concatenation path) and the same prompt's tail decoded one token at a time
(the tier written in place, the decode kernel's tier parts) must give each query the same f16 keys, so their KLDs
against the f16 cache agree (tests/test_tier_llama.py checks the same on the CPU).

    python3 scripts/gpu_tier_decode.py MODEL.gguf OUT.json
"""
from __future__ import annotations

import json
import sys

import llama_cpp  # noqa: F401  (first on purpose: scripts/gpu_cli.py)
import numpy as np

N, TAIL = 384, 128


def main(model: str, out: str) -> int:
    from oscar_gguf import load
    from oscar_gguf.corpus import load_corpus
    from oscar_gguf.evaluate import log_softmax

    def run(kv: str, step: bool, **kw) -> np.ndarray:
        with load(model, kv=kv, ctx=1024, logits_all=True, n_gpu_layers=-1, **kw) as m:
            toks = [m.llm.token_bos()] + m.llm.tokenize(load_corpus("eval").text.encode(), add_bos=False)[:N - 1]
            m.llm.eval(toks[:N - TAIL] if step else toks)
            for t in toks[N - TAIL:] if step else []:
                m.llm.eval([t])
            return log_softmax(np.array(m.llm.scores[N - TAIL:N], dtype=np.float64))

    ref = run("f16", False)
    rows = {}
    for kv in ("oscar3", "oscar2"):
        for sinks, window in ((0, 0), (1, 32), (1, 128)):
            kl = {}
            for step in (False, True):
                x = run(kv, step, sinks=sinks, window=window)
                kl["decode" if step else "batch"] = float((np.exp(ref) * (ref - x)).sum(-1).mean())
            rows[f"{kv} s{sinks}w{window}"] = kl
            print(f"{kv} s{sinks}w{window}: KLD batch {kl['batch']:.5f}, token by token {kl['decode']:.5f}", flush=True)
    with open(out, "w") as f:
        json.dump({"model": model, "tokens": N, "decoded": TAIL, "kld_vs_f16": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
