#!/usr/bin/env python3
"""The K-shift's cost, spread over texts: after llama.cpp's context shift (the first 96 cells dropped, the rest moved
back) the next-token KLD against an f16 cache that dropped the same cells without moving, against the same cache not
moved. A quantized K is quantized a second time by the shift (dequantize, rotate back, RoPE, rotate, quantize), so
the ratio is the price of that second quantization; the f16 tier's rows are only re-roped. Writes
docs/shift-spread-<tag>.{json,md}; run it on builds of other SIMD paths with another tag.

    .venv/bin/python scripts/shift_spread.py --tag avx512 [--seeds 8]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CASES = {  # label -> load() arguments
    "oscar3 calibrated, tier": dict(kv="oscar3"),
    "oscar3 calibrated, no tier": dict(kv="oscar3", sinks=0, window=0),
    "oscar3 uncalibrated, tier": dict(kv="oscar3", calib=False),
    "oscar3 uncalibrated, no tier": dict(kv="oscar3", calib=False, sinks=0, window=0),
    "oscar2 calibrated, tier": dict(kv="oscar2"),
    "oscar2 calibrated, no tier": dict(kv="oscar2", sinks=0, window=0),
    "oscar2 uncalibrated, tier": dict(kv="oscar2", calib=False),
    "q4_0": dict(kv="q4_0"),
}


def main() -> int:
    from tqdm import tqdm

    from cache_edits import shift_klds, shift_reference, shift_windows
    from oscar_gguf.bench import cpu_name

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", required=True, help="names the SIMD path / machine in the output file")
    ap.add_argument("--seeds", type=int, default=8, help="texts: 336-token windows at different offsets")
    ap.add_argument("--note", default="", help="how this build differs (e.g. its SIMD flags)")
    a = ap.parse_args()
    windows = shift_windows(a.seeds)
    exact = shift_reference("smollm2", windows)
    out = {"machine": cpu_name(), "tag": a.tag, "python": platform.python_version(), "cases": {}}
    for label, kw in tqdm(CASES.items(), desc="caches"):
        kept, shifted = shift_klds("smollm2", windows, exact, **kw)
        rows = [{"kept": k, "shifted": s, "ratio": s / k} for k, s in zip(kept, shifted)]
        r = np.array([x["ratio"] for x in rows])
        out["cases"][label] = {"runs": rows, "ratio_min": float(r.min()), "ratio_median": float(np.median(r)),
                               "ratio_max": float(r.max())}
    out["note"] = a.note
    lines = [f"K-shift cost on {out['machine']} ({a.tag}{': ' + a.note if a.note else ''}), SmolLM2 (the registry's calibrated copy), {a.seeds} texts "
             "of 336 tokens (Debian python3-doc prose): KLD of the last 16 tokens after dropping the first 96 cells, "
             "shifted (the rest moved back 96 positions) and kept (not moved), against an f16 cache that dropped "
             "the same cells.", "",
             "| cache | kept KLD (median) | shifted KLD (median) | shifted / kept: min | median | max |",
             "|---|---|---|---|---|---|"]
    for label, c in out["cases"].items():
        kept = np.median([x["kept"] for x in c["runs"]])
        shifted = np.median([x["shifted"] for x in c["runs"]])
        lines.append(f"| {label} | {kept:.4f} | {shifted:.4f} | {c['ratio_min']:.2f} | {c['ratio_median']:.2f} | "
                     f"{c['ratio_max']:.2f} |")
    note = f" --note '{a.note}'" if a.note else ""
    lines += ["", f"Command: `.venv/bin/python scripts/shift_spread.py --tag {a.tag} --seeds {a.seeds}{note}`"]
    (ROOT / "docs" / f"shift-spread-{a.tag}.json").write_text(json.dumps(out, indent=1) + "\n")
    (ROOT / "docs" / f"shift-spread-{a.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
