"""NumPy-facing OScaR codec: thin wrappers over the C functions in native/ (oscar.c, oscar_tcq.c, oscar_dot.c)."""
from __future__ import annotations

import numpy as np

from . import _native
from .kvtypes import oscar_type

BLOCK = 64


def bits_per_element(kind: str) -> float:
    """Storage cost of an OScaR type in bits per element (fp16 scale included)."""
    return oscar_type(kind).bits_per_element


def codebook(kind: str) -> np.ndarray:
    """The values an OScaR type's codes stand for: oscar4's Lloyd-Max levels (ascending), oscar2's and oscar3's 256
    trellis entries (indexed by an element's 8-bit window)."""
    t = oscar_type(kind)
    ffi, lib = _native.lib()
    if t.oscar_bits in (2, 3):
        return np.frombuffer(ffi.buffer(lib.oscar_tcq_codebook(t.oscar_bits), 4 << 8), dtype=np.float32).copy()
    return np.frombuffer(ffi.buffer(lib.oscar_levels(t.oscar_bits), 4 << t.oscar_bits), dtype=np.float32).copy()


def quantize(x: np.ndarray, kind: str) -> np.ndarray:
    """Quantize rows of shape (..., n), n a multiple of 64, into uint8 blocks of shape (..., n/64*block_bytes)."""
    t = oscar_type(kind)
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[-1] % BLOCK != 0 or x.shape[-1] == 0:
        raise ValueError(f"last dimension must be a positive multiple of {BLOCK}, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"expected a float array, got dtype {x.dtype}")
    xf = np.ascontiguousarray(x, dtype=np.float32)
    nblocks = xf.size // BLOCK
    out = np.empty(x.shape[:-1] + (x.shape[-1] // BLOCK * t.block_bytes,), dtype=np.uint8)
    ffi, lib = _native.lib()
    lib.oscar_quantize_row(t.oscar_bits, ffi.from_buffer("float[]", xf), ffi.from_buffer("uint8_t[]", out),
                           nblocks * BLOCK)
    return out


def dequantize(q: np.ndarray, kind: str, n: int) -> np.ndarray:
    """Decode uint8 blocks of shape (..., n/64*block_bytes) back to float32 rows of shape (..., n)."""
    t = oscar_type(kind)
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise ValueError(f"expected uint8 blocks, got dtype {q.dtype}")
    if n <= 0 or n % BLOCK:
        raise ValueError(f"n must be a positive multiple of {BLOCK}, got {n}")
    if q.ndim == 0 or q.shape[-1] != n // BLOCK * t.block_bytes:
        raise ValueError(f"last dimension must be {n // BLOCK * t.block_bytes} bytes for n={n} {kind}, got shape {q.shape}")
    qc = np.ascontiguousarray(q)
    out = np.empty(q.shape[:-1] + (n,), dtype=np.float32)
    ffi, lib = _native.lib()
    lib.oscar_dequantize_row(t.oscar_bits, ffi.from_buffer("uint8_t[]", qc), ffi.from_buffer("float[]", out), out.size)
    return out


def dot(q: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Dot product of one quantized row with a float32 vector (the CPU flash-attention K.Q kernel)."""
    t = oscar_type(kind)
    y = np.ascontiguousarray(y, dtype=np.float32).ravel()
    q = np.ascontiguousarray(q, dtype=np.uint8).ravel()
    if y.size % BLOCK or q.size != y.size // BLOCK * t.block_bytes:
        raise ValueError(f"{q.size} bytes of {kind} do not match a vector of {y.size} floats")
    ffi, lib = _native.lib()
    return float(lib.oscar_dot_row(t.oscar_bits, ffi.from_buffer("uint8_t[]", q), ffi.from_buffer("float[]", y), y.size))
