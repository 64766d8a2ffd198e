"""Broken and foreign calibrated files for the refusal tests (test_calibrate.py for Python, test_calib_llama.py
for llama.cpp)."""
from __future__ import annotations

import shutil
from pathlib import Path

from oscar_gguf import calibmeta
from oscar_gguf.ggufmeta import read_gguf
from oscar_gguf.ggufwrite import write_with_metadata


def with_edited_weights(src: Path, dst: Path) -> Path:
    """A copy of src with one weight byte flipped (the last tensor's first): another model as far as the
    calibration's fingerprint knows."""
    shutil.copy(src, dst)
    info = read_gguf(dst)
    with open(dst, "r+b") as f:
        f.seek(info.data_start + info.tensors[-1].offset)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    return dst


def with_calibration_fields(model: Path, cal: calibmeta.Calibration, dst: Path, **replace) -> Path:
    """model with cal's oscar.* keys written, those named in replace (key -> function of the value) changed."""
    fields = [(k, replace[k](v) if k in replace else v, t) for k, v, t in cal.fields()]
    write_with_metadata(model, dst, fields, calibmeta.PREFIX, progress=False)
    return dst
