"""Quality of KV-cache types against the f16 cache on real prose: KL divergence, perplexity, top-1 agreement.

Each chunk is `ctx` tokens (BOS + text) evaluated from an empty cache; like llama-perplexity's KLD mode,
the second half of each chunk is scored so every scored token sees at least ctx/2 tokens of context (the mean
KLD over all positions is reported too). Chunks are added until the 95 % confidence interval of every type's
mean KLD is under 10 % of it. OScaR types can be measured with several f16 tiers (sinks, window) in one run.
"""
from __future__ import annotations

import gc
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .kvtypes import Variant, effective_bits, kv_type, variants


@dataclass
class Stats:
    """Per-token sums for one cache type."""
    kld: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    top1: list[bool] = field(default_factory=list)

    def add(self, kld: np.ndarray, nll: np.ndarray, top1: np.ndarray) -> None:
        self.kld += kld.tolist()
        self.nll += nll.tolist()
        self.top1 += top1.tolist()

    def summary(self) -> dict:
        kld, nll = np.array(self.kld), np.array(self.nll)
        n = len(kld)
        kse = kld.std(ddof=1) / math.sqrt(n) if n > 1 else float("inf")
        return {"tokens": n, "kld": float(kld.mean()), "kld_ci95": float(1.96 * kse),
                "ppl": float(math.exp(nll.mean())), "top1": float(np.mean(self.top1))}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare(ref_logits: np.ndarray, logits: np.ndarray, targets: np.ndarray,
            rows: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-position KL(ref || this), NLL of the true next token, and top-1 agreement (in blocks of rows
    positions: a large vocabulary's temporaries would otherwise be several copies of the whole logits)."""
    kld, nll, top1 = (np.empty(len(targets)), np.empty(len(targets)), np.empty(len(targets), dtype=bool))
    for a in range(0, len(targets), rows):
        b = min(a + rows, len(targets))
        lp_ref, lp = log_softmax(ref_logits[a:b]), log_softmax(logits[a:b])
        kld[a:b] = (np.exp(lp_ref) * (lp_ref - lp)).sum(axis=-1)
        nll[a:b] = -lp[np.arange(b - a), targets[a:b]]
        top1[a:b] = ref_logits[a:b].argmax(axis=-1) == logits[a:b].argmax(axis=-1)
    return np.maximum(kld, 0.0), nll, top1


def chunk_logits(llm, tokens: list[int]) -> np.ndarray:
    """The chunk's all-position logits: a view of llm's own score buffer (float32), valid until llm evaluates
    again or closes. No copy: at 8192 tokens Gemma 3's 262144-word vocabulary makes each 8.6 GB."""
    llm.reset()
    llm.eval(tokens)
    return llm.scores[: len(tokens)]


def run(model: str, kv_types: list[str], ctx: int, max_chunks: int = 64, min_chunks: int = 2,
        rel_ci: float = 0.10, threads: int | None = None, n_gpu_layers: int = 0,
        tiers: list[tuple[int, int]] | None = None, calib: str = "on", text: str = "python3-doc") -> dict:
    from tqdm import tqdm

    from .chat import OscarModel
    from .corpus import load_corpus

    plan = {"f16": Variant("f16", 0, 0), **{k: v for k, v in variants(kv_types, tiers, calib).items() if k != "f16"}}
    types = list(plan)
    corpus = load_corpus("eval", text)

    def load(label: str) -> OscarModel:
        v = plan[label]
        return OscarModel(model, kv=v.kv, ctx=ctx, logits_all=True, n_threads=threads, n_gpu_layers=n_gpu_layers,
                          sinks=v.sinks, window=v.window, calib=v.calib)

    # Only the reference stays loaded; each other type is loaded for its turn on a chunk and compared before it
    # closes. All-position logits are n_ctx x n_vocab floats per model (2 GiB for Gemma 3's vocabulary at 2048
    # tokens, 8.6 GB at 8192): two score buffers at a time, and no copies of them.
    ref_model = load("f16")
    ref_llm = ref_model.llm
    text_tokens = ref_llm.tokenize(corpus.text.encode(), add_bos=False, special=False)
    bos = ref_llm.token_bos()
    n_chunks = min(max_chunks, len(text_tokens) // (ctx - 1))
    if n_chunks < min_chunks:
        raise ValueError(f"corpus has {len(text_tokens)} tokens, too few for {min_chunks} chunks of {ctx}")
    stats = {t: Stats() for t in types}
    stats_all = {t: Stats() for t in types}
    caches = {"f16": asdict(ref_model.cache)}
    shape = ref_model.shape
    first = ctx // 2
    t0 = time.time()
    bar = tqdm(total=n_chunks * len(types), desc=f"chunks of {ctx} tokens x types", file=sys.stderr)
    done = 0
    for c in range(n_chunks):
        chunk = [bos] + text_tokens[c * (ctx - 1):(c + 1) * (ctx - 1)]
        targets = np.array(chunk[1:])
        ref = chunk_logits(ref_llm, chunk)[:-1]
        for t in types:  # per position: the second half is a slice of it
            if t == "f16":
                kld, nll, top1 = compare(ref, ref, targets)
            else:
                m = load(t)
                try:
                    kld, nll, top1 = compare(ref, chunk_logits(m.llm, chunk)[:-1], targets)
                    caches[t] = asdict(m.cache)
                finally:
                    m.close()
                del m
                gc.collect()  # its score buffer goes now, before the next model's
            stats[t].add(kld[first:], nll[first:], top1[first:])
            stats_all[t].add(kld, nll, top1)
            bar.update(1)
        done = c + 1
        summaries = [s.summary() for t, s in stats.items() if t != "f16"]
        worst = max((r["kld_ci95"] / r["kld"] if r["kld"] > 0 else 0.0 for r in summaries), default=0.0)
        bar.set_postfix(worst_rel_ci=f"{worst:.3f}")
        if done >= min_chunks and worst < rel_ci:
            break
    bar.close()
    ref_model.close()
    return {
        "model": str(model), "model_file": ref_model.path.name, "ctx": ctx, "chunks": done,
        "scored_tokens_per_type": len(stats["f16"].kld), "seconds": round(time.time() - t0, 1),
        "corpus": {"text": corpus.name, "package": corpus.package, "version": corpus.version, "documents": corpus.documents},
        "results": {t: {"bits_per_element": kv_type(plan[t].kv).bits_per_element,
                        "effective_bits": effective_bits(caches[t]["type_k"], caches[t]["type_v"], shape.head_dim_k,
                                                         shape.head_dim_v, ctx, caches[t]["tier_sinks"],
                                                         caches[t]["tier_window"]),
                        **stats[t].summary(), "kld_all_positions": stats_all[t].summary()["kld"], "cache": caches[t]}
                    for t in types},
    }


def _effective(r: dict, cache: dict, ctx: int) -> float:
    """A result's effective bits; reports older than the column: from its cache, K and V heads of one size."""
    if "effective_bits" in r:
        return r["effective_bits"]
    if not cache:
        return r["bits_per_element"]
    return effective_bits(cache["type_k"], cache["type_v"], 1, 1, ctx, cache.get("tier_sinks", 0),
                          cache.get("tier_window", 0))


def markdown(report: dict) -> str:
    res = report["results"]
    q4 = res.get("q4_0", {}).get("kld")
    lines = [f"Model `{report['model_file']}`, context {report['ctx']}, {report['chunks']} chunks, "
             f"{report['scored_tokens_per_type']} scored tokens per type; text: Debian `{report['corpus']['package']}` "
             f"{report['corpus']['version']} ({len(report['corpus']['documents'])} documents). "
             "The CI is over tokens (1.96 standard errors of the per-token KLD).", "",
             "KLD and top-1 are over the second half of each chunk; 'all' is the KLD over every position. "
             "Tier: the f16 sinks/window of an OScaR cache and its size. Calibrated: llama.cpp applied the model's "
             f"calibration (docs/calibration.md). Effective bits: the main cache plus the f16 tier's rows at context "
             f"{report['ctx']} (DESIGN.md section 5).", "",
             f"| KV type | bits/element | effective bits @ {report['ctx']} | tier | calibrated | mean KLD vs f16 | 95 % CI | "
             "KLD / q4_0 | KLD, all | PPL | top-1 agreement |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, r in res.items():
        ratio = f"{r['kld'] / q4:.2f}" if q4 and t != "f16" else "-"
        c = r.get("cache", {})
        tier = f"{c['tier_sinks']}/{c['tier_window']} ({c['tier_mib']:.2f} MiB)" if c.get("tier_mib") else "-"
        kld_all = f"{r['kld_all_positions']:.5f}" if "kld_all_positions" in r else "-"
        cal = "yes" if c.get("calibrated") else "-"
        eff = f"{_effective(r, c, report['ctx']):.2f}"
        lines.append(f"| {t} | {r['bits_per_element']:.2f} | {eff} | {tier} | {cal} | {r['kld']:.5f} | ±{r['kld_ci95']:.5f} | {ratio} | "
                     f"{kld_all} | {r['ppl']:.3f} | {100 * r['top1']:.2f} % |")
    if "command" in report:
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    res = report["results"]
    for r in res.values():
        r.setdefault("effective_bits", _effective(r, r.get("cache", {}), report["ctx"]))
    bits = "effective_bits"
    for t, r in res.items():
        if t == "f16":
            continue
        cal = t.endswith(" +cal")  # drawn in its own colour, joined to its uncalibrated twin, not labelled again
        ax.errorbar(r[bits], r["kld"], yerr=r["kld_ci95"], fmt="o" if t.startswith("oscar") else "s",
                    color="C2" if cal else "C0" if t.startswith("oscar") else "C1")
        twin = res.get(t.removesuffix(" +cal")) if cal else None
        if twin:
            ax.plot([twin[bits]] * 2, [twin["kld"], r["kld"]], color="C2", lw=1, alpha=0.6)
        else:
            ax.annotate(t, (r[bits], r["kld"]), textcoords="offset points", xytext=(6, 4))
    if any(t.endswith(" +cal") for t in res):
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([], [], marker="o", ls="", color="C0", label="OScaR, uncalibrated"),
                           Line2D([], [], marker="o", ls="", color="C2", label="OScaR, calibrated"),
                           Line2D([], [], marker="s", ls="", color="C1", label="upstream")], fontsize=8)
    ax.set_yscale("log")
    tier_note = f" at context {report['ctx']}, f16 tier included" if bits == "effective_bits" else ""
    ax.set_xlabel("KV bits per element" + tier_note)
    ax.set_ylabel("mean KL divergence vs f16 cache")
    ax.set_title(f"{report['model_file']}, ctx {report['ctx']}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
