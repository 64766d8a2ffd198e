#!/usr/bin/env python3
"""What the trellis code buys in KL divergence (issue 15 item 1): llama-perplexity --kl-divergence from this build
(oscar2 is the trellis code) and from a build of a commit before it (oscar2 was the scalar Lloyd-Max code, e.g.
eed0d4a built with scripts/build_llama.py into another folder) over the same model, text and chunks, against one
f16 base from this build; oscar2 for K and V, for K alone (V oscar3), bare and on the default path (tier 1 + 128,
calibration).

    python3 scripts/tcq_kld.py OUT_PREFIX --scalar-bin DIR [--model smollm2] [--text debian-handbook] [--ctx 2048] [--chunks 2]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from pareto_cpu import parse, prepare, report_head, run, run_options  # noqa: E402

from tqdm import tqdm  # noqa: E402

from oscar_gguf import reports  # noqa: E402
from oscar_gguf.kvtypes import effective_bits  # noqa: E402

BARE = "--oscar-sinks 0 --oscar-window 0 --oscar-calib off"
# label -> (K type, V type, extra arguments, tier)
CACHES = {"q4_0": ("q4_0", "q4_0", "", (0, 0)),
          "K2 V2 default": ("oscar2", "oscar2", "", (1, 128)),
          "K2 V3 default": ("oscar2", "oscar3", "", (1, 128)),
          "K2 V2 bare": ("oscar2", "oscar2", BARE, (0, 0)),
          "K2 V3 bare": ("oscar2", "oscar3", BARE, (0, 0))}


def markdown(rep: dict) -> str:
    q4 = next(r["kld"] for r in rep["rows"] if r["cache"] == "q4_0")
    lines = [f"# Trellis-coded oscar2 against scalar oscar2: {rep['model']}, {rep['text']}, ctx {rep['ctx']}", "",
             rep["note"], "", "| cache | effective bits | scalar oscar2: KLD (÷ q4_0) | trellis: KLD (÷ q4_0) | "
             "trellis ÷ scalar | same top %, scalar / trellis |", "|---|---|---|---|---|---|"]
    by = {(r["build"], r["cache"]): r for r in rep["rows"]}
    for c in CACHES:
        s, t = by.get(("scalar", c)), by.get(("trellis", c))
        if c == "q4_0":
            lines.append(f"| q4_0 | {s['bits']:.2f} | {s['kld']:.5f} (1.00) | - | - | {s['top1']:.2f} |")
            continue
        if t is None or t.get("invalid"):  # kept in the JSON with the reason, never shown as a result
            lines.append(f"| {c} | {s['bits']:.2f} | {s['kld']:.5f} ({s['kld'] / q4:.2f}) | not valid* | - | "
                         f"{s['top1']:.2f} / - |")
            continue
        lines.append(f"| {c} | {s['bits']:.2f} | {s['kld']:.5f} ({s['kld'] / q4:.2f}) | {t['kld']:.5f} "
                     f"({t['kld'] / q4:.2f}) | {t['kld'] / s['kld']:.3f} | {s['top1']:.2f} / {t['top1']:.2f} |")
    bad = {r["invalid"] for r in rep["rows"] if r.get("invalid")}
    lines += [f"\n\\* {b}" for b in sorted(bad)]
    lines += ["", f"Command: `{rep['command']}`", ""]
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["build"], r["cache"]): r["kld"] for r in rep["rows"] if not r.get("invalid")}
    labels = [c for c in CACHES if c != "q4_0" and ("trellis", c) in by]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], [by[("scalar", c)] for c in labels], 0.4, label="scalar oscar2 (Lloyd-Max)")
    ax.bar([i + 0.2 for i in x], [by[("trellis", c)] for c in labels], 0.4, label="trellis oscar2 (L = 8)")
    ax.axhline(by[("scalar", "q4_0")], color="grey", ls="--", lw=1, label="q4_0")
    ax.set_xticks(list(x), labels)
    ax.set_yscale("log")
    ax.set_ylabel("mean KLD vs f16")
    ax.set_title(f"{rep['model']}, {rep['text']}, ctx {rep['ctx']} (CPU)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = run_options(__doc__, chunks=2)
    ap.add_argument("--scalar-bin", type=Path, help="the tools of a build from before the trellis")
    a = ap.parse_args()
    if a.replot:
        for p in reports.redraw(a.out, markdown, plot):
            print(p)
        return 0
    if a.scalar_bin is None:
        ap.error("--scalar-bin is required (the llama-perplexity folder of a build from before the trellis)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, shape, corpus, text = prepare(a, Path(tmp))
        base = Path(tmp) / "f16.kld"
        run(a.ours_bin, model, text, a.ctx, a.chunks, a.threads, "", base, True)
        jobs = [("scalar", c) for c in CACHES] + [("trellis", c) for c in CACHES if c != "q4_0"]
        for build, c in tqdm(jobs, desc="llama-perplexity runs", unit="run"):
            k, v, extra, tier = CACHES[c]
            log = run(a.scalar_bin if build == "scalar" else a.ours_bin, model, text, a.ctx, a.chunks, a.threads,
                      f"-ctk {k} -ctv {v} {extra}", base, False)
            rows.append({"build": build, "cache": c, "bits": effective_bits(k, v, shape.head_dim_k, shape.head_dim_v,
                                                                            a.ctx, *tier), **parse(log)})
    rep = {**report_head(a, model, corpus, "tcq_kld.py"), "rows": rows}
    for p in reports.write(rep, a.out, markdown, plot):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
