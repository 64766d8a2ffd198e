#!/usr/bin/env python3
"""The calibration's gain from `oscar-gguf eval --calib both` reports: each OScaR variant's KLD as a multiple of
q4_0's, uncalibrated and calibrated, their ratio, and the perplexities (the table in docs/calibration.md).

    python3 scripts/calib_gain.py docs/eval-calib-smollm2-ctx2048.json docs/eval-calib-gemma3-ctx2048.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    report = json.loads(path.read_text())
    res, name = report["results"], report["model_file"]
    q4 = res["q4_0"]["kld"]
    out = []
    for t, r in res.items():
        c = res.get(t + " +cal")
        if c:
            out.append(f"| {name} | {t} | {r['kld'] / q4:.2f} | {c['kld'] / q4:.2f} | {r['kld'] / c['kld']:.2f}× | "
                       f"{r['ppl']:.2f} → {c['ppl']:.2f} |")
    return out


if __name__ == "__main__":
    print("| model | type, tier | uncalibrated ÷ q4_0 | calibrated ÷ q4_0 | gain | PPL |\n|---|---|---|---|---|---|")
    print("\n".join(line for p in sys.argv[1:] for line in rows(Path(p))))
