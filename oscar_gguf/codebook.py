"""Derivation of the OScaR codebooks: Lloyd-Max quantizers for the standard normal distribution.

Lloyd's iteration alternates two optimality conditions until the levels stop moving: thresholds are
midpoints of neighbouring levels, and each level is the mean of N(0,1) between its thresholds,
(pdf(a) - pdf(b)) / (cdf(b) - cdf(a)). native/oscar.c holds the result to 9 decimals.
"""
from __future__ import annotations

import math


def _pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def lloyd_max(bits: int, tol: float = 1e-14, max_iter: int = 100_000) -> list[float]:
    """Levels (ascending) of the 2**bits-level Lloyd-Max quantizer of N(0,1)."""
    n = 1 << bits
    lv = [(i + 0.5 - n / 2) * 4.0 / n for i in range(n)]
    for _ in range(max_iter):
        t = [-math.inf] + [(lv[i] + lv[i + 1]) / 2 for i in range(n - 1)] + [math.inf]
        new = [(_pdf(t[i]) - _pdf(t[i + 1])) / (_cdf(t[i + 1]) - _cdf(t[i])) for i in range(n)]
        moved = max(abs(a - b) for a, b in zip(new, lv))
        lv = new
        if moved < tol:
            return lv
    raise RuntimeError(f"Lloyd's iteration did not converge for {bits} bits")


def distortion(levels: list[float]) -> float:
    """Mean squared error of the quantizer on N(0,1) (per element, unit variance)."""
    n = len(levels)
    t = [-math.inf] + [(levels[i] + levels[i + 1]) / 2 for i in range(n - 1)] + [math.inf]
    total = 0.0
    for i, c in enumerate(levels):
        a, b = t[i], t[i + 1]
        p = _cdf(b) - _cdf(a)
        m1 = _pdf(a) - _pdf(b)                                                    # E[x; a<x<b]
        m2 = p + (0.0 if math.isinf(a) else a * _pdf(a)) - (0.0 if math.isinf(b) else b * _pdf(b))  # E[x^2; ...]
        total += m2 - 2 * c * m1 + c * c * p
    return total
