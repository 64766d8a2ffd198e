#!/usr/bin/env python3
"""The CPU attention kernel alone (scripts/cpu_attn_kernel.c: one decode step of one layer at SmolLM2's shape, one
thread), before and after a change in one run: compiles the harness against native/ of git revision BASE and of the
working tree, both also for AVX2 alone (-mavx2 -mfma -mf16c -DOSCAR_NO_AVX512: what an AVX2-only CPU runs), and times
them in turn, best of REPS. Writes OUT.json, OUT.md and OUT.png.

    .venv/bin/python scripts/cpu_attn_kernel.py OUT --base REV [--rows 4096,16384] [--reps 15] [--rounds 3]
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from oscar_gguf.bench import cpu_name

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["oscar.c", "oscar_attn.c", "oscar_tcq.c", "oscar_dot.c"]
BITS = {"oscar2": 2.25, "oscar3": 3.25}  # the main cache's bits per element (this kernel has no f16 tier)


def build(native: Path, exe: Path, flags: list[str]) -> None:
    tile = ["-DTILE_DECODE"] if "k_bits" in (native / "oscar.h").read_text() else []
    subprocess.run(["cc", "-O3", *flags, *tile, f"-I{native}", str(ROOT / "scripts" / "cpu_attn_kernel.c"),
                    *(str(native / s) for s in SOURCES), "-lm", "-o", str(exe)], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--base", required=True, help="git revision of the 'before' native/")
    ap.add_argument("--rows", default="4096,16384")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="each build's best over this many interleaved rounds")
    a = ap.parse_args()
    rows = [int(r) for r in a.rows.split(",")]
    cases = [(n, nq) for n in rows for nq in (1, 8)]  # decode (one query row), a prefill batch of 8
    base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", a.base], check=True, capture_output=True,
                          text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        old = t / "base"
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", a.base, "native"], check=True, capture_output=True).stdout
        tarfile.open(fileobj=io.BytesIO(tar)).extractall(old)
        native, avx2 = ["-march=native"], ["-mavx2", "-mfma", "-mf16c", "-DOSCAR_NO_AVX512"]
        builds = {f"before ({base})": (old / "native", native), "now": (ROOT / "native", native),
                  f"before ({base}), AVX2 only": (old / "native", avx2), "now, AVX2 only": (ROOT / "native", avx2)}
        for i, (name, (native, extra)) in enumerate(builds.items()):
            build(native, t / f"b{i}", extra)
        best: dict[tuple[str, str, int], dict] = {}
        for _ in range(a.rounds):  # the builds in turn, so a drifting machine drifts for all of them
            for kind in BITS:
                for n, nq in cases:
                    for i, name in enumerate(builds):
                        r = json.loads(subprocess.run([str(t / f"b{i}"), str(int(kind[-1])), str(n), str(a.reps),
                                                       str(nq)], check=True, capture_output=True, text=True).stdout)
                        key = (name, kind, (n, nq))
                        if key not in best or r["ns_per_row"] < best[key]["ns_per_row"]:
                            best[key] = r
    results = [{"build": b, "type": k, "rows": n, "query_rows": nq,
                **{f: best[(b, k, (n, nq))][f] for f in ("ns_per_row", "ms_per_layer", "check")}} for (b, k, (n, nq)) in best]
    report = {"machine": cpu_name(), "base": base, "reps": a.reps, "rounds": a.rounds, "results": results,
              "command": "scripts/cpu_attn_kernel.py " + " ".join(sys.argv[1:])}
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    names = list(builds)
    lines = [f"The CPU attention kernel alone (`scripts/cpu_attn_kernel.c`), one decode step of one layer at SmolLM2's "
             f"shape (3 KV heads of 64, 3 query heads each), one thread, on {report['machine']}: ns per cached row "
             f"(its K and V, all queries), best of {a.reps} calls over {a.rounds} interleaved rounds; one query row "
             "(decode, oscar_attn_part over pieces) or 8 (a prefill batch that sees every row, oscar_attn_rows). Bits per "
             "element: the main cache's (this kernel has no f16 tier). \"AVX2 only\": built with "
             "-mavx2 -mfma -mf16c -DOSCAR_NO_AVX512 instead of -march=native. The check column (a sum of the last piece's output) is equal when the builds compute "
             f"the same bits. Command: `{report['command']}`.", "",
             "| type | bits/element | rows | query rows | " + " | ".join(f"{b} ns/row" for b in names)
             + " | before ÷ now | AVX2 only: before ÷ now | check (each build) |",
             "|---|---|---|---|" + "---|" * (len(names) + 3)]
    for kind in BITS:
        for n, nq in cases:
            ns = [best[(b, kind, (n, nq))]["ns_per_row"] for b in names]
            checks = " / ".join(f"{best[(b, kind, (n, nq))]['check']:.4f}" for b in names)
            lines.append(f"| {kind} | {BITS[kind]} | {n} | {nq} | " + " | ".join(f"{x:.2f}" for x in ns)
                         + f" | {ns[0] / ns[1]:.2f}× | {ns[2] / ns[3]:.2f}× | {checks} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    bars = [(k, c) for k in BITS for c in cases]
    w = 0.8 / len(names)
    for i, b in enumerate(names):
        ax.bar([j + i * w for j in range(len(bars))], [best[(b, k, c)]["ns_per_row"] for k, c in bars], w, label=b)
    ax.set_xticks([j + w * (len(names) - 1) / 2 for j in range(len(bars))],
                  [f"{k}\n{n} rows\n{nq} q" for k, (n, nq) in bars], fontsize=7)
    ax.set_ylabel("ns per cached row (1 thread)")
    ax.set_title(f"CPU attention kernel, decode and a batch of 8 query rows ({report['machine']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
