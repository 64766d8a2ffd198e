#!/usr/bin/env python3
"""CPU flash attention with the f16 tier, the op alone (ggml_flash_attn_ext + ggml_flash_attn_ext_add_tier through
the installed llama_cpp's libggml): milliseconds per call at the default model's shape (head size 64, 9 query heads
over 3 KV heads, the default tier of 129 rows), one decode row and a causal batch of 512, against upstream's f16
flash attention without a tier at the same shape. Writes OUT.json, OUT.md and OUT.png; --before adds the columns of
an earlier run of this script on another build (its JSON), for a before/after table.

    .venv/bin/python scripts/cpu_attn_bench.py OUT [--depths 4096,16384] [--threads 2] [--before OLD.json]
"""
from __future__ import annotations

import argparse
import json
import os
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


def markdown(report: dict, before: dict | None) -> str:
    ms = {(r["cache"], r["depth"], r["n_q"]): r["ms"] for r in report["rows"]}
    old = {(r["cache"], r["depth"], r["n_q"]): r["ms"] for r in before["rows"]} if before else {}
    kinds = [k for k in ("oscar2", "oscar3") if any(c == k for c, _, _ in ms)]
    head = ["depth", "query rows", "effective bits oscar2 / oscar3", "f16 (no tier)"]
    for k in kinds:
        head += ([f"{k} before"] if old else []) + [k, f"{k} / f16"] + ([f"{k} before / now"] if old else [])
    lines = [f"CPU flash attention with the default f16 tier, the op alone (`scripts/cpu_attn_bench.py`) on "
             f"{report['machine']}, {report['threads']} threads, {report.get('build', 'the installed build')}: milliseconds per call (best of 20 decode / 2 batch "
             f"calls) at SmolLM2's shape (head size {D}, {H} query heads over {HKV} KV heads, {TIER} tier rows), one "
             "decode row and a causal batch of 512 rows on top of the depth. f16 is upstream's flash attention "
             "without a tier, same build and run. Effective bits: oscar2's 2.25 bits per element plus the tier's "
             f"{TIER} f16 rows at the depth (oscar3: 3.25 plus the same)."
             + (f" \"before\": {before['build']}, an earlier run on {before['machine']}." if old else ""), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    depths = sorted({d for _, d, _ in ms})
    for d in depths:
        for n_q in (1, 512):
            f16 = ms[("f16 (no tier)", d, n_q)]
            bits = 2.25 + TIER * 16 / d
            cells = [str(d), str(n_q), f"{bits:.2f} / {bits + 1:.2f}", f"{f16:.2f}"]
            for k in kinds:
                now = ms[(k, d, n_q)]
                was = old.get((k, d, n_q))
                cells += ([f"{was:.2f}" if was else "-"] if old else []) + [f"{now:.2f}", f"{now / f16:.2f}"]
                cells += [f"{was / now:.2f}x faster" if was else "-"] if old else []
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, before: dict | None, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, n_q in zip(axes, (1, 512)):
        for rep, style, tag in ((report, "-", ""), (before, ":", " (before)")):
            if not rep:
                continue
            for cache in sorted({r["cache"] for r in rep["rows"]}):
                pts = sorted((r["depth"], r["ms"]) for r in rep["rows"] if r["cache"] == cache and r["n_q"] == n_q)
                if tag and cache.startswith("f16"):
                    continue
                ax.plot(*zip(*pts), style, marker="o", label=cache + tag)
        ax.set_xlabel("context depth (tokens)")
        ax.set_ylabel("ms per call")
        ax.set_title("decode (1 query row)" if n_q == 1 else "batch of 512 query rows")
        ax.legend(fontsize=8)
    fig.suptitle(f"CPU flash attention with the f16 tier ({report['machine']}, {report['threads']} threads)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output prefix for .json/.md/.png")
    ap.add_argument("--depths", default="4096,16384")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before", help="an earlier run's JSON (another build) for before/after columns")
    ap.add_argument("--render", action="store_true", help="write OUT.md and OUT.png from OUT.json, measure nothing")
    a = ap.parse_args()
    out = Path(a.out)
    before = json.loads(Path(a.before).read_text()) if a.before else None
    if a.render:
        report = json.loads(out.with_suffix(".json").read_text())
        out.with_suffix(".md").write_text(markdown(report, before))
        plot(report, before, out.with_suffix(".png"))
        return 0
    from tqdm import tqdm

    from oscar_gguf.bench import cpu_name
    depths = [int(d) for d in a.depths.split(",")]
    runs = [(d, n_q, reps, kind) for d in depths for n_q, reps in ((1, 20), (512, 2)) for kind in (None, "oscar2", "oscar3")]
    rows = []
    for depth, n_q, reps, kind in tqdm(runs, desc="attention op"):
        rows.append({"cache": kind or "f16 (no tier)", "depth": depth, "n_q": n_q,
                     "ms": time_op(kind, depth, n_q, a.threads, reps)})
    lib = os.environ.get("LLAMA_CPP_LIB_PATH")
    report = {"machine": cpu_name(), "threads": a.threads, "rows": rows,
              "build": f"ggml from LLAMA_CPP_LIB_PATH={lib}" if lib else "the installed build (-march=native)"}
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report, before))
    plot(report, before, out.with_suffix(".png"))
    print(markdown(report, before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
