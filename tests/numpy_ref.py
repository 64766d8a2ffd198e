"""Pure-NumPy model of the scalar OScaR block format (DESIGN.md section 3; oscar4), written from the spec, not from
the C. Its 2- and 3-bit cases are the scalar Lloyd-Max codes oscar2 and oscar3 had before the trellis codes
(tests/tcq_ref.py models those now): the baselines the trellis codes are measured against."""
from __future__ import annotations

import numpy as np

from oscar_gguf.codebook import lloyd_max

BLOCK = 64
BLOCK_BYTES = {2: 18, 3: 26, 4: 34}
LEVELS = {b: np.array(lloyd_max(b), dtype=np.float32) for b in (2, 3, 4)}


def _scale_to_fp16(scale: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # scales beyond float32/fp16 range saturate below
        h = scale.astype(np.float32).astype(np.float16)
    h[np.isinf(h)] = np.float16(65504.0)  # saturate instead of overflowing (scales are never negative)
    return h


def encode(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (codes[nblocks, 64], fp16 scales[nblocks]) for rows whose length is a multiple of 64."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, BLOCK)
    lv = LEVELS[bits].astype(np.float64)
    nan = np.isnan(x).any(axis=1)
    fmax = np.float64(np.finfo(np.float32).max)
    v = np.where(np.isinf(x), np.sign(x) * fmax, x).astype(np.float64)
    v[nan] = 0.0
    ss = (v * v).sum(axis=1)
    live = ss > 0
    u = np.zeros_like(v)
    u[live] = v[live] * (8.0 / np.sqrt(ss[live]))[:, None]
    thr = (lv[:-1] + lv[1:]) / 2
    codes = (u[..., None] > thr).sum(axis=-1)
    codes[~live] = 0
    lv2 = (lv[codes] ** 2).sum(axis=1)
    scale = np.zeros(len(x))
    scale[live] = np.sqrt(ss[live]) / np.sqrt(lv2[live])
    h = _scale_to_fp16(scale)
    h[nan] = np.float16(np.nan)
    codes[nan] = 0
    return codes.astype(np.uint8), h


def pack(codes: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """Lay codes and scales out as the block bytes of native/oscar.h."""
    n = len(codes)
    out = np.zeros((n, BLOCK_BYTES[bits]), dtype=np.uint8)
    out[:, :2] = scales.astype(np.float16).view(np.uint8).reshape(n, 2)
    i = np.arange(BLOCK)
    c = codes.astype(np.uint16)
    if bits == 4:
        np.bitwise_or.at(out, (slice(None), 2 + i % 32), (c << (4 * (i // 32))).astype(np.uint8))
    else:
        np.bitwise_or.at(out, (slice(None), 2 + i % 16), ((c & 3) << (2 * (i // 16))).astype(np.uint8))
        if bits == 3:
            np.bitwise_or.at(out, (slice(None), 18 + i % 8), ((c >> 2) << (i // 8)).astype(np.uint8))
    return out


def unpack(blocks: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, BLOCK_BYTES[bits])
    scales = blocks[:, :2].copy().view(np.float16).ravel()
    i = np.arange(BLOCK)
    if bits == 4:
        codes = (blocks[:, 2 + i % 32] >> (4 * (i // 32))) & 15
    else:
        codes = (blocks[:, 2 + i % 16] >> (2 * (i // 16))) & 3
        if bits == 3:
            codes |= ((blocks[:, 18 + i % 8] >> (i // 8)) & 1) << 2
    return codes, scales


def decode(blocks: np.ndarray, bits: int) -> np.ndarray:
    codes, scales = unpack(blocks, bits)
    return (scales.astype(np.float32)[:, None] * LEVELS[bits][codes]).ravel()
