#!/usr/bin/env python3
"""How far the rotated K and V rows of each registry model are from what a zero-centred, per-token-scaled code
expects, from their calibration statistics: the share of each channel's energy that is its mean (an offset every
token shares) and the spread of the channels' RMS. Writes docs/calib-spread.{json,md}.

    .venv/bin/python scripts/calib_spread.py [TOKENS]
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import llama_cpp  # noqa: F401  (before numpy, see scripts/gpu_cli.py)
import numpy as np

from oscar_gguf.calibrate import calibrate

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["smollm2", "gemma3-270m"]


def spread(mean: np.ndarray, std: np.ndarray) -> dict:
    e = mean.astype(np.float64) ** 2 + std.astype(np.float64) ** 2
    share, rms = mean.astype(np.float64) ** 2 / e, np.sqrt(e)
    return {"offset_share_median": float(np.median(share)), "offset_share_p90": float(np.quantile(share, 0.9)),
            "offset_share_of_energy": float((mean.astype(np.float64) ** 2).sum() / e.sum()),
            "rms_p90_over_p10": float(np.quantile(rms, 0.9) / np.quantile(rms, 0.1))}


def main() -> int:
    tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 4094
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in MODELS:
            cal = calibrate(m, Path(tmp) / f"{m}.gguf", tokens=tokens, progress=False)
            rows[m] = {w: spread(np.asarray(getattr(cal, f"{w}_mean")), np.asarray(getattr(cal, f"{w}_std"))) for w in "kv"}
    (ROOT / "docs" / "calib-spread.json").write_text(json.dumps({"tokens": tokens, "models": rows}, indent=1) + "\n")
    lines = [f"Rotated K and V rows per (layer, KV head, channel), from `oscar-gguf calibrate` statistics on {tokens} tokens of "
             "the calibration prose; command: `scripts/calib_spread.py`. Offset share: mean^2 / (mean^2 + std^2) of a "
             "channel (energy every token shares); RMS spread: 90th / 10th percentile of the channels' RMS.", "",
             "| model | rows | offset share, median channel | offset share, 90th pct | offset share of all energy | channel RMS p90/p10 |",
             "|---|---|---|---|---|---|"]
    for m, r in rows.items():
        for w in "kv":
            x = r[w]
            lines.append(f"| {m} | {w.upper()} | {x['offset_share_median']:.3f} | {x['offset_share_p90']:.3f} | "
                         f"{x['offset_share_of_energy']:.3f} | {x['rms_p90_over_p10']:.2f} |")
    (ROOT / "docs" / "calib-spread.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
