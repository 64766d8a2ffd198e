#!/usr/bin/env python3
"""The spread of real calibrations that the load-time check's bounds (native/oscar.h OSCAR_CALIB_*) were set from:
per (layer, KV head) the RMS r of the channel standard deviations, each std / r, and each |mean| / r, on both
registry models with oscar-gguf calibrate's defaults. Writes docs/calib-bounds.{json,md}.

    .venv/bin/python scripts/calib_bounds.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from oscar_gguf import _native
    from oscar_gguf.calibrate import DEFAULT_SEQ_LEN, DEFAULT_TOKENS, calibration_text, collect
    from oscar_gguf.models import resolve

    ffi, lib = _native.lib()
    bounds = ffi.new("double[4]")
    lib.oscar_calib_bounds(bounds)
    text = calibration_text()
    out = {"text": text.name, "tokens": DEFAULT_TOKENS, "seq_len": DEFAULT_SEQ_LEN,
           "bounds": dict(zip(("rms_min", "rms_max", "spread", "mean_max"), list(bounds))), "measured": {}}
    for name in ("smollm2", "gemma3-270m"):
        acc = collect(resolve(name, calibrated=False), text, DEFAULT_TOKENS, DEFAULT_SEQ_LEN)
        for kind in "kv":
            mean, std = (a.astype(np.float64) for a in acc.mean_std(kind))
            r = np.sqrt((std ** 2).mean(-1, keepdims=True))
            out["measured"][f"{name} {kind.upper()}"] = {
                "rms_min": float(r.min()), "rms_max": float(r.max()), "std_over_rms_min": float((std / r).min()),
                "std_over_rms_max": float((std / r).max()), "abs_mean_over_rms_max": float((np.abs(mean) / r).max())}
    b = out["bounds"]
    lines = [f"Calibration statistics of both registry models ({text.name}, {DEFAULT_TOKENS} tokens in sequences of "
             f"{DEFAULT_SEQ_LEN}), per (layer, KV head): r is the RMS of the head's channel standard deviations.", "",
             "| model, cache | r min | r max | std / r min | std / r max | abs(mean) / r max |", "|---|---|---|---|---|---|"]
    for k, m in out["measured"].items():
        lines.append(f"| {k} | {m['rms_min']:.3g} | {m['rms_max']:.3g} | {m['std_over_rms_min']:.3f} | "
                     f"{m['std_over_rms_max']:.3f} | {m['abs_mean_over_rms_max']:.2f} |")
    lines += ["", f"Bounds llama.cpp and Python check at load (native/oscar_calib.c `oscar_calib_check`): r in "
              f"[{b['rms_min']:g}, {b['rms_max']:g}], each std within {b['spread']:g}x of r, each abs(mean) at most "
              f"{b['mean_max']:g} r.", "", "Command: `.venv/bin/python scripts/calib_bounds.py`"]
    (ROOT / "docs" / "calib-bounds.json").write_text(json.dumps(out, indent=1) + "\n")
    (ROOT / "docs" / "calib-bounds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
