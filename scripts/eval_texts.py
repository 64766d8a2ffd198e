#!/usr/bin/env python3
"""One table from several `oscar-gguf eval` reports (models x kinds of prose x contexts): each OScaR type's KLD
against the f16 cache on the default path (tier 1 + 128, the model's calibration), as a ratio to q4_0's in the same
run, with its effective bits at that context (issue 15, items 3-4).

    python3 scripts/eval_texts.py OUT_PREFIX REPORT.json [REPORT.json ...]

Writes OUT_PREFIX.json (the rows), OUT_PREFIX.md and OUT_PREFIX.png (KLD / q4_0 against effective bits).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from oscar_gguf import reports
from oscar_gguf.evaluate import _effective  # reports older than the column: from their cache


def family(model_file: str) -> str:
    """The registry model a file is a copy of (its own name, or a calibrated copy's), for grouping."""
    low = model_file.lower()
    return "SmolLM2-135M" if "smollm2" in low else "Gemma 3 270M" if "gemma" in low else model_file


def rows(report: dict, name: str) -> list[dict]:
    res = report["results"]
    q4 = res.get("q4_0", {}).get("kld")
    corpus = report["corpus"]
    text = corpus.get("text") or "python3-doc"
    out = []
    for t, r in res.items():
        c = r.get("cache", {})
        if t in ("f16", "q4_0") or not c.get("calibrated") or (c.get("tier_sinks"), c.get("tier_window")) != (1, 128):
            continue  # the default path only: the default tier and the model's calibration
        out.append({"report": name, "model": family(report["model_file"]), "file": report["model_file"], "text": text,
                    "package": f"{corpus['package']} {corpus['version']}", "ctx": report["ctx"],
                    "chunks": report["chunks"], "type": t.split()[0], "effective_bits": _effective(r, c, report["ctx"]), "kld": r["kld"],
                    "kld_ci95": r["kld_ci95"], "q4_0_kld": q4, "ratio": r["kld"] / q4 if q4 else None,
                    "calibrated": bool(r.get("cache", {}).get("calibrated"))})
    return out


def markdown(data: dict) -> str:
    lines = ["KLD against the f16 cache on real prose (the second half of each chunk), as a ratio to q4_0's in the same "
             "run; effective bits: the main cache plus the f16 tier's rows at that context. python3-doc: Python's "
             "documentation outside the calibration's how-tos; debian-handbook: The Debian Administrator's Handbook, a "
             "kind of prose no calibration read. Default tier (1 sink + 128 window) and the model's calibration.", "",
             "| model | text | ctx | chunks | type | effective bits | KLD | 95 % CI | q4_0 KLD | KLD / q4_0 | report |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        q4 = f"{r['q4_0_kld']:.5f}" if r["q4_0_kld"] is not None else "-"
        lines.append(f"| {r['model']} | {r['text']} | {r['ctx']} | {r['chunks']} | {r['type']} | {r['effective_bits']:.2f} | "
                     f"{r['kld']:.5f} | ±{r['kld_ci95']:.5f} | {q4} | {ratio} | `{r['report']}` |")
    lines += ["", f"Command: `{data['command']}`"]
    return "\n".join(lines) + "\n"


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in data["rows"]})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        series = {}
        for r in data["rows"]:
            if r["model"] == model and r["ratio"] is not None:
                series.setdefault((r["text"], r["ctx"]), []).append(r)
        for i, ((text, ctx), rs) in enumerate(sorted(series.items())):
            rs.sort(key=lambda r: r["effective_bits"])
            ax.plot([r["effective_bits"] for r in rs], [r["ratio"] for r in rs], "o-", color=f"C{i}",
                    label=f"{text}, ctx {ctx}")
            for r in rs:
                ax.annotate(r["type"].split()[0], (r["effective_bits"], r["ratio"]), textcoords="offset points",
                            xytext=(4, 3), fontsize=7)
        ax.axhline(1.0, color="C7", ls="--", lw=1)
        ax.axhline(0.5, color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("effective bits per element at the context (tier included)")
        ax.set_ylabel("KLD / q4_0's KLD (same run)")
        ax.set_title(model, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("reports", nargs="+")
    a = ap.parse_args()
    data = {"rows": [], "command": f"python3 scripts/eval_texts.py {a.out} " + " ".join(a.reports)}
    for p in a.reports:
        data["rows"] += rows(json.loads(Path(p).read_text()), p)
    reports.write(data, Path(a.out), markdown, plot)  # atomic json/md/png, like oscar-gguf eval's
    print(markdown(data))


if __name__ == "__main__":
    main()
