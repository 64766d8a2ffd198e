"""CPU decode speed at context depth and KV buffer sizes, all cache types side by side in one run.

For every depth and type: fill the cache with `depth` tokens of prose (extending the previous depth's cache),
then time `n_decode` single-token decode steps (batch 1, like generation), dropping them again between repeats.
Types are interleaved per depth and repeated so machine drift hits all of them alike.
"""
from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

from .kvtypes import kv_type


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def expected_kv_bytes(shape, cells: int, layers: int, name: str) -> tuple[int, int]:
    t = kv_type(name)
    per_k = cells * shape.n_head_kv * shape.head_dim_k
    per_v = cells * shape.n_head_kv * shape.head_dim_v
    return layers * per_k * t.block_bytes // t.block_size, layers * per_v * t.block_bytes // t.block_size


def run(model: str, kv_types: list[str], depths: list[int], n_decode: int = 32, repeats: int = 3,
        threads: int | None = None) -> dict:
    from tqdm import tqdm

    from .chat import OscarModel
    from .corpus import load_corpus

    types = [kv_type(t).name for t in kv_types]
    ctx = max(depths) + n_decode + 1
    threads = threads or os.cpu_count()
    models = {t: OscarModel(model, kv=t, ctx=ctx, n_threads=threads, n_threads_batch=threads)
              for t in tqdm(types, desc="loading models", file=sys.stderr)}
    text = load_corpus("eval").text.encode()
    prompt = models[types[0]].llm.tokenize(text, add_bos=True)[: max(depths)]
    decode_ids = prompt[1:n_decode + 1]
    rates: dict[str, dict[int, list[float]]] = {t: {d: [] for d in depths} for t in types}
    filled = {t: 0 for t in types}
    with tqdm(total=len(depths) * (1 + repeats) * len(types), desc="prefill + decode timing", file=sys.stderr) as bar:
        for d in sorted(depths):
            for t in types:  # extend each cache to depth d (eval first drops cells at positions >= n_tokens)
                llm = models[t].llm
                llm.n_tokens = filled[t]
                llm.eval(prompt[filled[t]:d])
                filled[t] = d
                bar.update(1)
            for _ in range(repeats):
                for t in types:
                    llm = models[t].llm
                    llm.n_tokens = d
                    start = time.perf_counter()
                    for tok in decode_ids:
                        llm.eval([tok])
                    rates[t][d].append(n_decode / (time.perf_counter() - start))
                    bar.update(1)
    results = {}
    for t, m in models.items():
        caches = m.log.kv_caches()
        k_mib, v_mib = sum(c["k_mib"] for c in caches), sum(c["v_mib"] for c in caches)
        exp_k = exp_v = 0
        for c in caches:
            ek, ev = expected_kv_bytes(m.shape, c["cells"], c["layers"], t)
            exp_k, exp_v = exp_k + ek, exp_v + ev
        results[t] = {
            "bits_per_element": kv_type(t).bits_per_element,
            "decode_tok_s": {str(d): float(np.median(r)) for d, r in rates[t].items()},
            "decode_tok_s_all": {str(d): r for d, r in rates[t].items()},
            "kv_cells": sum(c["cells"] for c in caches),
            "k_mib_reported": k_mib, "v_mib_reported": v_mib,
            "k_mib_expected": exp_k / 2 ** 20, "v_mib_expected": exp_v / 2 ** 20,
        }
        m.close()
    return {"model": str(model), "model_file": models[types[0]].path.name,
            "machine": f"{cpu_name()}, {threads} threads", "ctx": ctx, "n_decode": n_decode,
            "repeats": repeats, "depths": depths, "results": results}


def markdown(report: dict) -> str:
    depths = report["depths"]
    res = report["results"]
    lines = [f"Model `{report['model']}`, {report['machine']}, batch 1 decode, median of {report['repeats']} runs "
             f"of {report['n_decode']} tokens; KV cache of {report['ctx']} tokens.", "",
             "| KV type | bits/element | " + " | ".join(f"tok/s @ {d}" for d in depths)
             + " | K MiB (llama.cpp) | K MiB (bits × elements) | V MiB (llama.cpp) | V MiB (bits × elements) |",
             "|---|---|" + "---|" * len(depths) + "---|---|---|---|"]
    for t, r in res.items():
        speeds = " | ".join(f"{r['decode_tok_s'][str(d)]:.1f}" for d in depths)
        lines.append(f"| {t} | {r['bits_per_element']:.2f} | {speeds} | {r['k_mib_reported']:.2f} | "
                     f"{r['k_mib_expected']:.2f} | {r['v_mib_reported']:.2f} | {r['v_mib_expected']:.2f} |")
    if "q4_0" in res:
        lines += ["", "Decode speed relative to q4_0 (same run):", "",
                  "| KV type | " + " | ".join(f"@ {d}" for d in depths) + " |", "|---|" + "---|" * len(depths)]
        for t, r in res.items():
            lines.append(f"| {t} | " + " | ".join(
                f"{r['decode_tok_s'][str(d)] / res['q4_0']['decode_tok_s'][str(d)]:.2f}" for d in depths) + " |")
    if "command" in report:
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for t, r in report["results"].items():
        ax.plot(report["depths"], [r["decode_tok_s"][str(d)] for d in report["depths"]], marker="o", label=t)
    ax.set_xlabel("context depth (tokens)")
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f"{report['model']} on {report['machine']}", fontsize=8)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
