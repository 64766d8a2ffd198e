"""NumPy model of a bitshift-trellis 2-bit code for a block of 64 elements (issue 15, item 1), written before any C.

The format: a block's 64 codes are one circular stream of 128 bits. Element j reads the L-bit window that starts
at bit 2j (wrapping past bit 127 to bit 0) and decodes to codebook[window] x the block's scale: any element
decodes alone (shift, mask, one table lookup), at 2 bits per element like a scalar 2-bit code. Consecutive windows
share L - 2 bits, so the codes form a trellis whose state is the window: from state s the next state is
(s >> 2) | c << (L - 2) for one of 4 values c of the two new bits. Encoding finds the stream whose decoded
values are closest to the block (Viterbi over the 2^L states; the circle closes with the transition from the last
window back to the first).

The codebook (2^L values) is derived by `train_codebook`: Gaussian quantiles in a fixed pseudo-random order, then
Lloyd iterations (encode training blocks of standard Gaussians, move each entry to the mean of the values it
coded). Everything here is seeded; the same arguments give the same codebook.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

BLOCK = 64
BITS = 2  # per element: 2 new bits per trellis step (oscar2; `step` below models other rates)
GRID = 2.0 ** -9  # the C encoder's: it rounds values and codebook to multiples of this (oscar_tcq_scaled)


def successors(L: int, step: int = BITS) -> np.ndarray:
    """[2^L, 2^step]: the states reachable from each state."""
    s = np.arange(1 << L)[:, None]
    return (s >> step) | (np.arange(1 << step)[None, :] << (L - step))


def predecessors(L: int, step: int = BITS) -> np.ndarray:
    """[2^L, 2^step]: the states each state is reached from (its low L-step bits are their high L-step bits)."""
    s = np.arange(1 << L)[:, None]
    return ((s & ((1 << (L - step)) - 1)) << step) | np.arange(1 << step)[None, :]


def _viterbi(x: np.ndarray, cb: np.ndarray, first_ok: np.ndarray | None, last_ok: np.ndarray | None,
             step: int = BITS) -> tuple:
    """Best state path for each row of x [B, n] over cb's trellis. first_ok / last_ok [B, 2^L] bool: the states
    allowed for the first and the last element (None: all). Returns (states [B, n], cost [B])."""
    B, n = x.shape
    L = int(np.log2(len(cb)))
    pred = predecessors(L, step)
    cost = (x[:, :1] - cb[None, :]) ** 2
    if first_ok is not None:
        cost = np.where(first_ok, cost, np.inf)
    back = np.empty((n, B, 1 << L), dtype=np.uint8)
    for j in range(1, n):
        cand = cost[:, pred]  # [B, 2^L, 4]
        c = cand.argmin(axis=2)
        back[j] = c
        cost = np.take_along_axis(cand, c[..., None], axis=2)[..., 0] + (x[:, j:j + 1] - cb[None, :]) ** 2
    if last_ok is not None:
        cost = np.where(last_ok, cost, np.inf)
    states = np.empty((B, n), dtype=np.int64)
    states[:, -1] = cost.argmin(axis=1)
    best = cost[np.arange(B), states[:, -1]]
    for j in range(n - 1, 0, -1):
        states[:, j - 1] = pred[states[:, j], back[j][np.arange(B), states[:, j]]]
    return states, best


def _closes(L: int, overlap: np.ndarray, step: int = BITS) -> tuple[np.ndarray, np.ndarray]:
    """For each row's overlap value o (the first window's low L-step bits, which the last window's high L-step
    bits must repeat): the allowed first and last states."""
    s = np.arange(1 << L)[None, :]
    o = overlap[:, None]
    return (s & ((1 << (L - step)) - 1)) == o, (s >> step) == o


def encode(x: np.ndarray, cb: np.ndarray, exact: bool = False, grid: float | None = None, step: int = BITS) -> np.ndarray:
    """Windows [B, n] of the circular streams that code the rows of x [B, n] (n even) with codebook cb.
    exact: try every overlap value (2^(L-step) Viterbi runs, the true optimum of the circle); otherwise two runs:
    one on the rows turned by half a block, whose best path says which overlap the circle wants at the seam, and
    one constrained to that overlap. grid: round x and cb to multiples of it first, as the C encoder does with
    GRID (its costs are then exact in float64). step: new bits per element (windows start at bit step x j)."""
    x = np.asarray(x, dtype=np.float64)
    if grid is not None:
        x, cb = np.rint(x / grid) * grid, np.rint(np.asarray(cb, dtype=np.float64) / grid) * grid
    B, n = x.shape
    L = int(np.log2(len(cb)))
    if exact:
        best_cost = np.full(B, np.inf)
        best = np.zeros((B, n), dtype=np.int64)
        for o in range(1 << (L - step)):
            first, last = _closes(L, np.full(B, o), step)
            st, c = _viterbi(x, cb, first, last, step)
            better = c < best_cost
            best[better], best_cost[better] = st[better], c[better]
        return best
    h = n // 2
    turned, _ = _viterbi(np.roll(x, -h, axis=1), cb, None, None, step)
    overlap = turned[:, n - h] & ((1 << (L - step)) - 1)  # the state at element 0 of the unturned row
    first, last = _closes(L, overlap, step)
    st, _ = _viterbi(x, cb, first, last, step)
    return st


def stream(states: np.ndarray, L: int, step: int = BITS) -> np.ndarray:
    """The circular bit streams [B, step n] (bit step j + t is bit t of window j) behind valid window paths."""
    B, n = states.shape
    bits = np.zeros((B, step * n), dtype=np.uint8)
    for t in range(step):
        bits[:, t::step] = (states >> t) & 1
    for j in range(n):  # every window must read the stream it claims (checks the path closes the circle)
        idx = (step * j + np.arange(L)) % (step * n)
        got = (bits[:, idx].astype(np.int64) << np.arange(L)).sum(axis=1)
        if not np.array_equal(got, states[:, j]):
            raise ValueError(f"window {j} does not follow from the stream: not a closed trellis path")
    return bits


def decode(bits: np.ndarray, cb: np.ndarray, step: int = BITS) -> np.ndarray:
    """Values [B, n] from streams [B, step n]: element j = cb[bits step j .. step j + L - 1 of the circle]."""
    B, nbits = bits.shape
    L = int(np.log2(len(cb)))
    out = np.empty((B, nbits // step))
    for j in range(nbits // step):
        idx = (step * j + np.arange(L)) % nbits
        out[:, j] = cb[(bits[:, idx].astype(np.int64) << np.arange(L)).sum(axis=1)]
    return out


def initial_codebook(L: int, seed: int = 0) -> np.ndarray:
    """Gaussian quantiles at (i + 1/2) / 2^L, in the order of a seeded permutation of the states."""
    nd = NormalDist()
    q = np.array([nd.inv_cdf((i + 0.5) / (1 << L)) for i in range(1 << L)])
    return q[np.random.default_rng(seed).permutation(1 << L)]


def train_codebook(L: int, blocks: int = 2000, iters: int = 8, seed: int = 0, step: int = BITS) -> np.ndarray:
    """initial_codebook, then `iters` Lloyd steps on `blocks` blocks of standard Gaussians (seeded)."""
    cb = initial_codebook(L, seed)
    x = np.random.default_rng(seed + 1).standard_normal((blocks, BLOCK))
    for _ in range(iters):
        st = encode(x, cb, step=step)
        sums = np.bincount(st.ravel(), weights=x.ravel(), minlength=1 << L)
        counts = np.bincount(st.ravel(), minlength=1 << L)
        cb = np.where(counts > 0, sums / np.maximum(counts, 1), cb)
    return cb
