"""The f16 tier's bookkeeping (native/oscar_tier.c): slots, eviction, sequence operations, attention masks."""
from __future__ import annotations

import numpy as np
import pytest

from oscar_gguf import _native


class Tier:
    def __init__(self, n_seq: int, sinks: int, window: int, n_swa: int = 0):
        self.ffi, self.lib = _native.lib()
        n = n_seq * (sinks + window)
        self.pos = np.full(n, -1, dtype=np.int32)
        self.shift = np.zeros(n, dtype=np.int32)
        self.t = self.ffi.new("oscar_tier *", {"n_seq": n_seq, "sinks": sinks, "window": window,
                                               "pos": self.ffi.from_buffer("int32_t[]", self.pos),
                                               "shift": self.ffi.from_buffer("int32_t[]", self.shift),
                                               "n_swa": n_swa})
        self.per_seq = sinks + window

    def i32(self, a):
        return self.ffi.from_buffer("int32_t[]", np.ascontiguousarray(a, dtype=np.int32))

    def place(self, seq, pos) -> np.ndarray:
        seq, pos = np.atleast_1d(np.asarray(seq, np.int32)), np.atleast_1d(np.asarray(pos, np.int32))
        seq = np.broadcast_to(seq, pos.shape).copy()
        slot = np.empty(len(pos), dtype=np.int32)
        n = self.lib.oscar_tier_place(self.t, len(pos), self.i32(seq), self.i32(pos), self.ffi.from_buffer("int32_t[]", slot))
        assert n == (slot >= 0).sum()
        return slot

    def held(self, seq: int) -> set[int]:
        p = self.pos[seq * self.per_seq:(seq + 1) * self.per_seq]
        return set(p[p >= 0].tolist())

    def mask(self, q_seq, q_pos, x_seq=(), x_pos=(), slot0=0, nslots=None) -> np.ndarray:
        nslots = len(self.pos) if nslots is None else nslots
        out = np.zeros((len(q_pos), nslots + len(x_pos)), dtype=np.float16)
        self.lib.oscar_tier_mask(self.t, slot0, nslots, len(q_pos), self.i32(q_seq), self.i32(q_pos), len(x_pos),
                                 self.i32(x_seq), self.i32(x_pos),
                                 self.ffi.cast("uint16_t *", self.ffi.from_buffer(out)), out.shape[1])
        return out


def expected(positions, sinks, window) -> set[int]:
    ps = sorted(set(positions))
    return {p for p in ps if p < sinks} | set([p for p in ps if p >= sinks][-window:] if window else [])


@pytest.mark.parametrize("sinks,window", [(1, 4), (0, 4), (4, 0), (2, 3)])
def test_one_by_one_and_batched_agree(sinks, window):
    a, b = Tier(1, sinks, window), Tier(1, sinks, window)
    for p in range(20):
        s = a.place(0, p)[0]
        assert (s >= 0) == (p in expected(range(p + 1), sinks, window))
    slots = b.place(0, np.arange(20))
    assert a.held(0) == b.held(0) == expected(range(20), sinks, window)
    placed = slots[slots >= 0]
    assert len(set(placed.tolist())) == len(placed)  # one token per slot: set_rows writes them all at once
    assert {int(b.pos[s]) for s in placed} == b.held(0)


def test_sequences_are_independent_and_masks_follow_them():
    t = Tier(3, 1, 4)
    t.place(0, np.arange(10))
    t.place(2, np.arange(3))
    assert t.held(0) == {0, 6, 7, 8, 9} and t.held(1) == set() and t.held(2) == {0, 1, 2}
    m = t.mask([0, 2], [10, 2])
    for i, (qs, qp) in enumerate([(0, 10), (2, 2)]):
        for s, kp in enumerate(t.pos):
            want = kp >= 0 and s // 5 == qs and kp <= qp and (kp < 1 or kp > qp - 4)
            assert (m[i, s] == 0) == want and (m[i, s] == -np.inf) == (not want)


def test_mask_extra_keys_are_the_batch():
    """Prefill attends the batch's own tokens from the batch: extra keys with their sequence and position."""
    t = Tier(2, 1, 3)
    t.place(0, np.arange(5))  # holds 0, 2, 3, 4
    q_pos = np.arange(5, 9)
    m = t.mask([0] * 4, q_pos, x_seq=[0, 0, 1, 0], x_pos=[5, 6, 5, 7])
    held = {int(p): s for s, p in enumerate(t.pos) if p >= 0 and s < 4}
    for i, q in enumerate(q_pos):
        for kp, s in held.items():  # window of 3 and the sink
            assert (m[i, s] == 0) == (kp == 0 or kp > q - 3)
        for j, (xs, xp) in enumerate([(0, 5), (0, 6), (1, 5), (0, 7)]):
            assert (m[i, 8 + j] == 0) == (xs == 0 and xp <= q and (xp == 0 or xp > q - 3))


@pytest.mark.parametrize("with_batch", [True, False])
def test_main_mask_drops_the_keys_the_tier_source_holds(with_batch):
    """oscar_tier_mask_main against a direct model: a visible main-cache cell is dropped for a query when the
    query covers its position and the tier source holds that position of its sequence: the tier's slots, plus
    the batch's tokens when the batch is attended beside the tier (prefill); without them (decode in place) a
    position the tier does not hold stays in the main cache."""
    t = Tier(2, 1, 4)
    t.place(0, np.arange(12))   # holds 0, 8..11
    t.place(1, np.arange(3))    # holds 0..2
    q_seq = np.array([0, 0, 1, 0], np.int32)
    q_pos = np.array([12, 13, 3, 14], np.int32)
    cell_pos = np.array(list(range(15)) + [-1, 2, 3], np.int32)  # seq 0's cells, an empty one, two of seq 1
    cell_seq = np.array([0] * 15 + [0, 1, 1])
    mask = np.where((cell_seq[None, :] == q_seq[:, None]) & (cell_pos[None, :] <= q_pos[:, None])
                    & (cell_pos[None, :] >= 0), 0.0, -np.inf).astype(np.float16)
    mask[0, 5] = 1.5  # a finite non-zero value (ALiBi) stays a candidate
    held = {(s, int(p)) for s in (0, 1) for p in t.pos[s * 5:(s + 1) * 5] if p >= 0}
    if with_batch:
        held |= set(zip(q_seq.tolist(), q_pos.tolist()))
    want = mask.copy()
    for i, (qs, qp) in enumerate(zip(q_seq, q_pos)):
        for j, kp in enumerate(cell_pos):
            covers = kp <= qp and (kp < 1 or kp > qp - 4)
            if mask[i, j] != -np.inf and kp >= 0 and covers and (int(qs), int(kp)) in held:
                want[i, j] = -np.inf
    got = mask.copy()
    nx = len(q_pos) if with_batch else 0
    t.lib.oscar_tier_mask_main(t.t, len(q_pos), t.i32(q_seq), t.i32(q_pos), nx, t.i32(q_seq), t.i32(q_pos),
                               len(cell_pos), t.i32(cell_pos), t.ffi.cast("uint16_t *", t.ffi.from_buffer(got)), got.shape[1])
    np.testing.assert_array_equal(got, want)
    assert (got[0, [0, 9, 10, 11]] == -np.inf).all() and got[0, 8] == 0  # sink and window; 8 is older
    assert (got[0, 12] == -np.inf) == with_batch  # the query's own position: in the source only with the batch
    assert (got[1, 12] == -np.inf) == with_batch and got[1, 9] == 0  # 9 left query 13's window
    assert got[2, 16] == -np.inf and (got[2, 17] == -np.inf) == with_batch  # seq 1's cell 2 (tier), 3 (batch)


def test_sliding_window_layers_see_only_their_reach():
    """In a sliding-window layer the tier attends a key only within the layer's reach (q - k < n_swa), like the
    main cache's SWA mask: the sink drops out once the query is n_swa past it, and so does the window's oldest."""
    t = Tier(1, 1, 4, n_swa=3)
    t.place(0, np.arange(10))  # holds 0, 6..9
    m = t.mask([0, 0], [9, 2])
    seen = [sorted(int(t.pos[c]) for c in np.flatnonzero(row == 0)) for row in m]
    assert seen == [[7, 8, 9], [0]]
    cell_pos = np.arange(10, dtype=np.int32)
    main = np.zeros((1, 10), np.float16)
    t.lib.oscar_tier_mask_main(t.t, 1, t.i32([0]), t.i32([9]), 0, t.i32([]), t.i32([]), 10, t.i32(cell_pos),
                               t.ffi.cast("uint16_t *", t.ffi.from_buffer(main)), 10)
    assert np.flatnonzero(main[0] == -np.inf).tolist() == [7, 8, 9]  # what the tier gives; 0 and 6 stay (SWA masks them)


def test_stream_slice_of_the_mask():
    t = Tier(2, 1, 2)
    t.place(1, np.arange(4))
    m = t.mask([1], [4], slot0=3, nslots=3)
    assert m.shape == (1, 3) and (m[0] == 0).sum() == 2  # sink 0 and position 3 (2 left the window of 2)


def test_seq_rm_then_regrow():
    t = Tier(1, 1, 4)
    t.place(0, np.arange(12))
    t.lib.oscar_tier_seq_rm(t.t, 0, 10, -1)
    assert t.held(0) == {0, 8, 9}
    t.place(0, [10, 11])
    assert t.held(0) == {0, 8, 9, 10, 11}
    t.lib.oscar_tier_seq_rm(t.t, -1, 0, -1)
    assert t.held(0) == set()


def test_seq_cp_returns_the_rows_to_copy_and_keep():
    t = Tier(3, 1, 4)
    t.place(0, np.arange(9))
    t.place(1, [0, 1])
    frm, to = np.zeros(5, np.int32), np.zeros(5, np.int32)
    n = t.lib.oscar_tier_seq_cp(t.t, 0, 1, 0, -1, t.ffi.from_buffer("int32_t[]", frm), t.ffi.from_buffer("int32_t[]", to))
    assert t.held(1) == {0, 5, 6, 7, 8}  # 1 was the oldest window entry of seq 1: evicted by the copies
    pairs = list(zip(frm[:n].tolist(), to[:n].tolist()))
    assert len({d for _, d in pairs}) == n and all(t.pos[s] == t.pos[d] for s, d in pairs)
    assert all(0 <= s < 5 and 5 <= d < 10 for s, d in pairs)
    t.lib.oscar_tier_seq_keep(t.t, 1)
    assert t.held(0) == set() and t.held(1) == {0, 5, 6, 7, 8}


def test_seq_add_records_the_shift_and_drops_negative_positions():
    t = Tier(1, 1, 4)
    t.place(0, np.arange(10))  # 0, 6, 7, 8, 9
    t.lib.oscar_tier_seq_rm(t.t, 0, 4, 7)  # context shift: drop 4..6, move 7.. back by 3
    t.lib.oscar_tier_seq_add(t.t, 0, 7, -1, -3)
    by_pos = {int(p): int(s) for p, s in zip(t.pos, t.shift) if p >= 0}
    assert by_pos == {0: 0, 4: -3, 5: -3, 6: -3}
    t.lib.oscar_tier_seq_add(t.t, 0, 0, -1, -5)
    assert t.held(0) == {0, 1}  # positions 0 and 4 went below zero
    t.place(0, [2])
    assert t.shift[t.lib.oscar_tier_find(t.t, 0, 2)] == 0  # a new token starts unshifted


def test_seq_div_merges_positions():
    t = Tier(1, 0, 6)
    t.place(0, np.arange(6))
    t.lib.oscar_tier_seq_div(t.t, 0, 0, -1, 2)
    assert t.held(0) == {0, 1, 2} and (t.pos >= 0).sum() == 3


def test_random_operations_keep_one_slot_per_position():
    rng = np.random.default_rng(0)
    t = Tier(2, 1, 5)
    lens = [0, 0]
    for _ in range(300):
        s = int(rng.integers(2))
        op = rng.random()
        if op < 0.6:
            n = int(rng.integers(1, 9))
            t.place(s, np.arange(lens[s], lens[s] + n))
            lens[s] += n
            if n >= 5:  # a run of at least W new tokens: exactly the newest W (and the sink) remain
                assert set(range(lens[s] - 5, lens[s])) <= t.held(s)
        elif op < 0.8 and lens[s] > 2:
            cut = int(rng.integers(1, lens[s]))
            t.lib.oscar_tier_seq_rm(t.t, s, cut, -1)
            lens[s] = cut
        else:
            frm, to = np.zeros(6, np.int32), np.zeros(6, np.int32)
            t.lib.oscar_tier_seq_rm(t.t, 1 - s, 0, -1)
            t.lib.oscar_tier_seq_cp(t.t, s, 1 - s, 0, -1, t.ffi.from_buffer("int32_t[]", frm),
                                    t.ffi.from_buffer("int32_t[]", to))
            lens[1 - s] = lens[s]
            assert t.held(1 - s) == t.held(s)
        for q in range(2):
            live = t.pos[q * 6:(q + 1) * 6]
            live = live[live >= 0]
            assert len(set(live.tolist())) == len(live) and (live < max(lens[q], 1)).all()
