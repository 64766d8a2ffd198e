#!/usr/bin/env python3
"""Where the GPU eval's extra KL divergence comes from: every path against the CPU f16 cache.

`oscar-gguf eval` compares each cache type with the f16 cache on the same device. On the GPU every quantized
type, upstream q8_0 included, came out about 0.012 nats worse than on the CPU. This scores the same chunks
(as the eval: BOS + text, second half of each chunk) through several paths, each in its own process, and
gives the KLD of every path against the CPU f16 cache and against the GPU f16 cache:
  device  cpu (CUDA hidden) or gpu (all layers offloaded),
  ubatch  512 (the prefill flash-attention kernels) or 1 (one token at a time: the decode kernels),
  fa      flash attention on or off (off: f16 only; K.Q through the plain matmul path).

    python3 scripts/gpu_kld_probe.py MODEL.gguf OUTDIR [CHUNKS]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# llama_cpp before numpy on the GPU image: see scripts/gpu_cli.py
import llama_cpp  # (first on purpose)
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CTX = 2048
# (device, cache type, ubatch, flash attention)
PATHS = [("cpu", "f16", 512, True), ("cpu", "q8_0", 512, True), ("cpu", "oscar4", 512, True),
         ("gpu", "f16", 512, True), ("gpu", "f16", 1, True), ("gpu", "f16", 512, False),
         ("gpu", "q8_0", 512, True), ("gpu", "q8_0", 1, True), ("gpu", "q4_0", 512, True),
         ("gpu", "oscar4", 512, True), ("gpu", "oscar4", 1, True), ("gpu", "oscar2", 512, True)]


def name(p: tuple) -> str:
    dev, t, ub, fa = p
    return f"{dev} {t} ub{ub}" + ("" if fa else " fa-off")


def logits_of(model: str, p: tuple, chunks: int, out: Path) -> None:
    """Child: scored logits of every chunk through path p, saved as float32 .npy."""
    from oscar_gguf.corpus import load_corpus
    from oscar_gguf.kvtypes import kv_type

    dev, t, ub, fa = p
    llm = llama_cpp.Llama(model_path=model, n_ctx=CTX, n_batch=ub, n_ubatch=ub, type_k=kv_type(t).ggml_type,
                          type_v=kv_type(t).ggml_type, flash_attn=fa, n_gpu_layers=-1 if dev == "gpu" else 0,
                          logits_all=True, verbose=False)
    text = llm.tokenize(load_corpus("eval").text.encode(), add_bos=False, special=False)
    rows = []
    for c in range(chunks):
        llm.reset()
        llm.eval([llm.token_bos()] + text[c * (CTX - 1):(c + 1) * (CTX - 1)])
        rows.append(np.array(llm.scores[CTX // 2:CTX - 1], dtype=np.float32))
    np.save(out, np.concatenate(rows))


def kld(ref: np.ndarray, x: np.ndarray) -> float:
    def log_softmax(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64) - a.max(axis=-1, keepdims=True)
        return a - np.log(np.exp(a).sum(axis=-1, keepdims=True))
    lr, lx = log_softmax(ref), log_softmax(x)
    return float(np.maximum((np.exp(lr) * (lr - lx)).sum(axis=-1), 0.0).mean())


def main() -> int:
    model, outdir = sys.argv[1], Path(sys.argv[2])
    chunks = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    if len(sys.argv) > 4:  # child
        logits_of(model, PATHS[int(sys.argv[4])], chunks, Path(sys.argv[5]))
        return 0
    outdir.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, p in enumerate(PATHS):
        f = outdir / f"logits-{i}.npy"
        env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if p[0] == "cpu" else {}))
        r = subprocess.run([sys.executable, __file__, model, str(outdir), str(chunks), str(i), str(f)], env=env,
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{name(p)} failed: {r.stderr[-2000:]}")
        files[name(p)] = f
        print(f"done: {name(p)}", flush=True)
    refs = ["cpu f16 ub512", "gpu f16 ub512"]
    ref_logits = {r: np.load(files[r]) for r in refs}
    table = {n: {r: kld(ref_logits[r], np.load(f)) for r in refs} for n, f in files.items()}
    for f in files.values():
        f.unlink()
    report = {"ctx": CTX, "chunks": chunks, "scored_tokens": chunks * (CTX // 2 - 1), "kld": table}
    (outdir / "kld-probe.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Mean KLD over {report['scored_tokens']} scored tokens ({chunks} chunks of {CTX}, second halves) "
             "of each path against two references:", "",
             "| path | vs CPU f16 | vs GPU f16 (ubatch 512) |", "|---|---|---|"]
    lines += [f"| {n} | {v[refs[0]]:.5f} | {v[refs[1]]:.5f} |" for n, v in table.items()]
    (outdir / "kld-probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
