#!/usr/bin/env python3
"""Which part of the calibration does the work (issue 5's simulation said: the K mean). Writes copies of a calibrated
model whose calibration keeps only some parts (the rest made identity: mean 0, scale 1) and evaluates each, every
copy with the same eval (oscar-gguf eval's chunks and KLD), in one run:

    python3 scripts/calib_ablation.py CALIBRATED.gguf OUT_PREFIX [--types oscar3,oscar2] [--tiers 1:32,1:128]

Writes OUT_PREFIX.json and OUT_PREFIX.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import llama_cpp  # noqa: F401  (first: see scripts/gpu_cli.py)
import numpy as np

from oscar_gguf import calibmeta, evaluate
from oscar_gguf.cli import _tiers
from oscar_gguf.ggufwrite import write_with_metadata

PARTS = {  # name -> which statistics stay (the others become identity)
    "none": (), "K mean": ("k_mean",), "K mean + scale": ("k_mean", "k_std"), "V mean + scale": ("v_mean", "v_std"),
    "all": ("k_mean", "k_std", "v_mean", "v_std"),
}


def keep_only(cal: calibmeta.Calibration, keep: tuple[str, ...]) -> calibmeta.Calibration:
    out = calibmeta.Calibration(**vars(cal))
    for name in ("k_mean", "k_std", "v_mean", "v_std"):
        if name not in keep:
            setattr(out, name, (np.ones_like if name.endswith("std") else np.zeros_like)(getattr(cal, name)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--types", default="oscar3,oscar2")
    ap.add_argument("--tiers", default="1:32,1:128")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=2)
    a = ap.parse_args()
    cal = calibmeta.read_calibration(a.model)
    if cal is None:
        raise SystemExit(f"{a.model} has no calibration")
    rows = {}
    with tempfile.TemporaryDirectory(dir=Path(a.out).parent) as tmp:
        for name, keep in PARTS.items():
            path = Path(tmp) / "part.gguf"
            write_with_metadata(Path(a.model), path, keep_only(cal, keep).fields(), calibmeta.PREFIX, progress=False)
            r = evaluate.run(str(path), a.types.split(","), a.ctx, max_chunks=a.chunks, min_chunks=a.chunks,
                             tiers=_tiers(a.tiers))
            rows[name] = {t: v["kld"] for t, v in r["results"].items() if t != "f16"}
    report = {"model": Path(a.model).name, "ctx": a.ctx, "chunks": a.chunks, "kld": rows,
              "command": f"python3 scripts/calib_ablation.py {Path(a.model).name} OUT --types {a.types} "
                         f"--tiers {a.tiers} --ctx {a.ctx} --chunks {a.chunks}"}
    Path(a.out + ".json").write_text(json.dumps(report, indent=1) + "\n")
    variants = list(next(iter(rows.values())))
    lines = [f"Model `{report['model']}` (its own calibration, parts of it made identity), context {a.ctx}, "
             f"{a.chunks} chunks of the eval text, mean KLD vs the f16 cache over each chunk's second half; "
             "in brackets: the KLD with no calibration ÷ this row's.", "",
             "| calibration kept | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[v]:.5f} ({rows['none'][v] / r[v]:.2f}×)" for v in variants) + " |")
    Path(a.out + ".md").write_text("\n".join(lines) + "\n\nCommand: `" + report["command"] + "`\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
