#!/usr/bin/env python3
"""The f16 tier on the GPU, decode against prefill: with every layer offloaded, a prompt evaluated as one batch (the
tier attended beside the batch: the f16 concatenation path) and the same prompt's tail decoded one token at a time
(the tier written in place, the decode kernel's tier parts) must give each query the same f16 keys, so their KLDs
against the f16 cache agree (tests/test_tier_llama.py checks the same on the CPU).

    python3 scripts/gpu_tier_decode.py MODEL.gguf OUT.json     # writes OUT.json and OUT.md
    python3 scripts/gpu_tier_decode.py --render OUT.json        # OUT.md again from OUT.json
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    Path(out).write_text(json.dumps({"model": model, "device": gpu, "tokens": N, "decoded": TAIL, "kld_vs_f16": rows},
                                    indent=1) + "\n")
    return render(out)


def render(out: str) -> int:
    d = json.loads(Path(out).read_text())
    lines = ["# The f16 tier on the GPU: decode against prefill", "",
             f"Machine: {d.get('device', 'the GPU of the run (see gpu-check in the same run)')}. Default model with every layer offloaded; `python3 scripts/gpu_tier_decode.py MODEL OUT.json` (scripts/gpu_run.sh "
             f"stage tiereval). A {d['tokens']}-token prompt evaluated as one batch (the tier attended beside the batch: the f16 "
             f"concatenation path) and with its last {d['decoded']} tokens decoded one at a time (the tier written in place, the "
             f"decode kernel's tier parts); mean KLD of those {d['decoded']} positions against the GPU's f16 cache (batch). Two GPU "
             "kernels on the same f16 cache already differ by about 0.017 (docs/gpu-kld-probe-h100.md).", "",
             "| KV type | KLD, batch | KLD, token by token |", "|---|---|---|"]
    lines += [f"| {k} | {v['batch']:.5f} | {v['decode']:.5f} |" for k, v in d["kld_vs_f16"].items()]
    Path(out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(render(sys.argv[2]) if sys.argv[1] == "--render" else main(*sys.argv[1:3]))
