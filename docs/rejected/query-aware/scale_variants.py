#!/usr/bin/env python3
"""The query-aware K scale and its neighbours, measured as edits of a calibration's scales (issue 15, item 2).

Needs query-aware.patch applied (Accumulator.query_msq, collect(queries=True)). Each variant rewrites the K or V
standard deviations of the model's calibration; llama.cpp turns them into the same planes the native
query-aware scale would build (a head's scales keep their RMS, which no OScaR type sees: every row is scaled
by its norm), and each copy is evaluated on the same chunks:

    python3 docs/rejected/query-aware/scale_variants.py MODEL TEXT CTX CHUNKS VARIANTS OUT.json [--stats S.npz]

VARIANTS, comma-separated: std (the calibration as it is), qaK (K scale (sigma^2 / E[q^2])^(1/4)), Kw<p> (K
standardized, then tilted by the queries: a = E[q^2]^(p/2) / sigma), Vsqrt (V scale sigma^(1/2)), joined with +.
"""
from __future__ import annotations

import argparse
import importlib
import json
import tempfile
from pathlib import Path

import llama_cpp  # noqa: F401
import numpy as np

from oscar_gguf import calibmeta, evaluate
from oscar_gguf.ggufwrite import write_with_metadata
from oscar_gguf.models import resolve

calibrate = importlib.import_module("oscar_gguf.calibrate")


def keep_rms(s: np.ndarray, ref: np.ndarray) -> np.ndarray:
    r = np.sqrt((ref.astype(np.float64) ** 2).mean(-1, keepdims=True))
    q = np.sqrt((s.astype(np.float64) ** 2).mean(-1, keepdims=True))
    return (s * r / q).astype(np.float32)


def variant(cal: calibmeta.Calibration, q_msq: np.ndarray, name: str) -> calibmeta.Calibration:
    c = calibmeta.Calibration(**vars(cal))
    ks, vs = cal.k_std.astype(np.float64), cal.v_std.astype(np.float64)
    for part in name.split("+"):
        if part == "qaK":
            c.k_std = keep_rms((ks ** 2 / q_msq) ** 0.25, ks)
        elif part.startswith("Kw"):
            c.k_std = keep_rms(ks * q_msq ** (-float(part[2:]) / 2), ks)
        elif part == "Vsqrt":
            c.v_std = keep_rms(vs ** 0.5, vs)
        elif part != "std":
            raise SystemExit(f"unknown variant {part}")
    c.q_msq = None
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    for a in ("model", "text", "ctx", "chunks", "variants", "out"):
        ap.add_argument(a)
    ap.add_argument("--stats", help="an .npz of q_msq saved by an earlier run (else measured on the calibration text)")
    a = ap.parse_args()
    model = resolve(a.model)
    cal = calibmeta.read_calibration(model)
    if a.stats:
        q_msq = np.load(a.stats)["q_msq"].astype(np.float64)
    else:
        acc = calibrate.collect(resolve(a.model, calibrated=False), calibrate.calibration_text(None), queries=True)
        q_msq = acc.query_msq().astype(np.float64)
    names = a.variants.split(",")
    res = {}
    with tempfile.TemporaryDirectory(dir=Path(a.out).parent) as tmp:
        for i, name in enumerate(names):
            path = Path(tmp) / "m.gguf"
            write_with_metadata(model, path, variant(cal, q_msq, name).fields(), calibmeta.PREFIX, progress=False)
            types = (["q4_0"] if i == 0 else []) + ["oscar3", "oscar2"]
            r = evaluate.run(str(path), types, int(a.ctx), max_chunks=int(a.chunks), min_chunks=int(a.chunks), text=a.text)
            res[name] = {t: r["results"][t]["kld"] for t in r["results"] if t != "f16"}
            print(name, res[name], flush=True)
    Path(a.out).write_text(json.dumps({"model": a.model, "text": a.text, "ctx": int(a.ctx), "chunks": int(a.chunks),
                                       "kld": res}, indent=1) + "\n")


if __name__ == "__main__":
    main()
