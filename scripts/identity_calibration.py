#!/usr/bin/env python3
"""Copy a GGUF with an identity calibration (every mean 0, every scale 1), for timing only: llama.cpp runs every op
of the calibration's transform and gets the uncalibrated cache's results. Used on the random-weight benchmark
model (scripts/make_bench_model.py), which has no text to calibrate on.

    python3 scripts/identity_calibration.py IN.gguf OUT.gguf
"""
from __future__ import annotations

import sys
from pathlib import Path

import llama_cpp  # noqa: F401  (first: the GPU image's wheels clash when numpy comes before it, docs/NOTES.md)
import numpy as np

from oscar_gguf import calibmeta
from oscar_gguf.ggufmeta import attention_shape, read_gguf
from oscar_gguf.ggufwrite import write_with_metadata


def main(src: str, dst: str) -> None:
    info = read_gguf(src)
    s = attention_shape(info)
    rot_k, rot_v = calibmeta.rotation_sizes(s)
    k, v = (s.n_layer, s.n_head_kv, s.head_dim_k), (s.n_layer, s.n_head_kv, s.head_dim_v)
    cal = calibmeta.Calibration("identity (timing only)", "-", 0, 0, calibmeta.model_fingerprint(info), s.n_layer,
                                s.n_head_kv, s.head_dim_k, s.head_dim_v, rot_k, rot_v, np.zeros(k, np.float32),
                                np.ones(k, np.float32), np.zeros(v, np.float32), np.ones(v, np.float32))
    write_with_metadata(Path(src), Path(dst), cal.fields(), calibmeta.PREFIX)


if __name__ == "__main__":
    main(*sys.argv[1:3])
