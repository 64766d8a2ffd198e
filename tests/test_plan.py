"""The decisions llama.cpp makes for an OScaR cache (native/oscar_plan.c, native/oscar_calib.c), through cffi: which
caches get a tier, where the calibration applies and its means drop out, which saved states fit, which tier slots a
state holds, and which calibration values are refused."""
from __future__ import annotations

import numpy as np
import pytest

from oscar_gguf import _native

ffi, lib = _native.lib()


def tier_plan(**kw) -> tuple[int, str]:
    layout = dict(sinks=1, window=128, oscar_k=1, oscar_v=1, n_seq_max=1, flash_attn=1, mla=0, swa_type=0,
                  shares_cells=0, wired=1)
    layout.update(kw)
    err = ffi.new("char[]", 512)
    return lib.oscar_tier_plan(ffi.new("oscar_tier_layout *", layout), err, 512), ffi.string(err).decode()


def test_tier_for_oscar_caches_of_every_wired_layout():
    assert tier_plan() == (1, "")
    assert tier_plan(n_seq_max=8)[0] == 1          # one tier per sequence: unified or a stream per sequence
    assert tier_plan(swa_type=1)[0] == 1           # standard sliding-window layers (Gemma 3)
    assert tier_plan(oscar_k=0)[0] == 1            # either side of an OScaR type
    assert tier_plan(oscar_k=0, oscar_v=0) == (0, "")          # f16, q8_0, ... caches have none
    assert tier_plan(oscar_k=0, oscar_v=0, flash_attn=0, mla=1) == (0, "")  # whatever their layout
    assert tier_plan(sinks=0, window=0) == (0, "")             # asked off


@pytest.mark.parametrize("kw, why", [
    (dict(flash_attn=0), "flash attention only, which is off"),
    (dict(mla=1), "K-only (MLA) cache"),
    (dict(swa_type=2), "chunked and symmetric"),
    (dict(swa_type=3), "chunked and symmetric"),
    (dict(shares_cells=1), "shares another context's cells"),
    (dict(wired=0), "cache kind has no tier yet"),
    (dict(window=1 << 29, n_seq_max=4), "more tier slots"),
])
def test_tier_refused_loudly_where_a_layout_cannot_have_it(kw, why):
    rc, err = tier_plan(**kw)
    assert rc == -1 and why in err and "--oscar-sinks 0 --oscar-window 0" in err, err


def test_negative_tier_sizes_are_refused():
    rc, err = tier_plan(window=-1)
    assert rc == -1 and "must be >= 0" in err


def calib_plan(**kw) -> tuple[int, tuple[int, int], str]:
    layout = dict(oscar_k=1, oscar_v=1, enabled=1, present=1, rot_k=64, rot_v=64, cal_rot_k=64, cal_rot_v=64, mla=0,
                  partial_rope=0)
    layout.update(kw)
    use, err = ffi.new("oscar_calib_use *"), ffi.new("char[]", 512)
    rc = lib.oscar_calib_plan(ffi.new("oscar_calib_layout *", layout), use, err, 512)
    return rc, (use.k, use.v), ffi.string(err).decode()


def test_calibration_plan():
    assert calib_plan() == (1, (1, 1), "")
    assert calib_plan(oscar_k=0, rot_k=0)[:2] == (1, (0, 1))     # q8_0 K keeps its own rotation: only V must match
    rc, use, err = calib_plan(partial_rope=1)
    assert (rc, use) == (1, (0, 1)) and "RoPE on part of the head" in err
    assert calib_plan(oscar_k=0, oscar_v=0) == (0, (0, 0), "")
    for kw, notice in ((dict(present=0), "no calibration"), (dict(enabled=0), "calibration is off"),
                       (dict(mla=1), "MLA")):
        rc, use, err = calib_plan(**kw)
        assert (rc, use) == (0, (0, 0)) and notice in err
    rc, use, err = calib_plan(rot_k=128)
    assert rc == -1 and "rotations of 64 (K) and 64 (V), this cache rotates by 128 and 64" in err


def test_means_drop_out_where_the_transform_would_not_be_exact():
    assert lib.oscar_calib_keep_mean(1, 0, 0) == lib.oscar_calib_keep_mean(0, 0, 0) == 1
    assert lib.oscar_calib_keep_mean(1, 1, 0) == lib.oscar_calib_keep_mean(0, 1, 0) == 0  # attention sinks: both
    assert lib.oscar_calib_keep_mean(1, 0, 1) == 0 and lib.oscar_calib_keep_mean(0, 0, 1) == 1  # soft-cap: K


def hdr(**kw):
    h = dict(magic=lib.OSCAR_STATE_MAGIC, version=lib.OSCAR_STATE_VERSION, type_k=43, type_v=43, sinks=1, window=128,
             calib_k=1, calib_v=1, calib_hash=7)
    h.update(kw)
    return ffi.new("oscar_state_hdr *", h)


def state_check(saved, cur) -> tuple[int, str]:
    err = ffi.new("char[]", 768)
    return lib.oscar_state_check(saved, cur, err, 768), ffi.string(err).decode()


def test_state_check_names_every_difference():
    assert state_check(hdr(), hdr()) == (0, "")
    rc, err = state_check(hdr(sinks=0, window=0), hdr())
    assert rc == -1 and "tier sinks: saved 0, this cache 1" in err and "tier window: saved 0, this cache 128" in err
    rc, err = state_check(hdr(type_v=8, calib_v=0), hdr())
    assert "V type: saved 8, this cache 43" in err and "calibrated V: saved 0, this cache 1" in err
    assert "another one" in state_check(hdr(calib_hash=8), hdr())[1]
    assert "not saved by this oscar-gguf" in state_check(hdr(magic=2), hdr())[1]
    # formats 1 and 2 held oscar2's / oscar3's scalar codes, whose bytes the trellis codes would read as noise
    for old in (1, 2):
        rc, err = state_check(hdr(version=old), hdr())
        assert rc == -1 and f"state format {old}, this build reads 3" in err and "nothing was loaded" in err


def test_state_slots_are_the_sequences_held_slots():
    n_seq, s, w = 3, 1, 2
    pos = np.full(n_seq * (s + w), -1, np.int32)
    pos[[0, 2, 4, 5, 8]] = [0, 7, 0, 5, 3]
    shift = np.zeros_like(pos)
    t = ffi.new("oscar_tier *", dict(n_seq=n_seq, sinks=s, window=w, pos=ffi.from_buffer("int32_t[]", pos),
                                     shift=ffi.from_buffer("int32_t[]", shift), n_swa=0))
    out = np.empty(len(pos), np.int32)
    for seq, want in ((-1, [0, 2, 4, 5, 8]), (0, [0, 2]), (1, [4, 5]), (2, [8])):
        n = lib.oscar_tier_state_slots(t, seq, ffi.from_buffer("int32_t[]", out))
        assert out[:n].tolist() == want


def check(mean, std) -> str:
    err = ffi.new("char[]", 512)
    n_layer, n_head, dim = std.shape
    rc = lib.oscar_calib_check(ffi.from_buffer("float[]", np.ascontiguousarray(mean, np.float32)),
                               ffi.from_buffer("float[]", np.ascontiguousarray(std, np.float32)), n_layer, n_head,
                               dim, b"oscar.k_mean", b"oscar.k_std", err, 512)
    assert (rc == 0) == (ffi.string(err) == b"")
    return ffi.string(err).decode()


def test_calibration_values_checked_before_they_become_planes():
    rng = np.random.default_rng(3)
    mean, std = rng.normal(0, 2, (2, 3, 64)).astype(np.float32), rng.lognormal(0, 0.2, (2, 3, 64)).astype(np.float32)
    assert check(mean, std) == ""
    bounds = ffi.new("double[4]")
    lib.oscar_calib_bounds(bounds)
    rms_min, rms_max, spread, mean_max = list(bounds)
    cases = [  # (edit, what the message names)
        (lambda m, s: s.__setitem__((1, 2, 5), 0.0), "oscar.k_std[325] (layer 1, KV head 2, channel 5) = 0: not positive"),
        (lambda m, s: s.__setitem__((0, 0, 0), -1.0), "oscar.k_std[0] (layer 0, KV head 0, channel 0) = -1: not positive"),
        (lambda m, s: s.__setitem__((0, 1, 3), np.nan), "oscar.k_std[67] (layer 0, KV head 1, channel 3) = nan: not finite"),
        (lambda m, s: m.__setitem__((1, 0, 9), np.inf), "oscar.k_mean[201] (layer 1, KV head 0, channel 9) = inf: not finite"),
        (lambda m, s: s.__setitem__((1, 1, 1), 1e-30), "oscar.k_std[257] (layer 1, KV head 1, channel 1) = 1e-30"),
        (lambda m, s: s.__setitem__((0, 2, 7), 1e30), "oscar.k_std[128..191] (layer 0, KV head 2)"),
        (lambda m, s: s.__setitem__(1, 1e-8), "outside"),
        (lambda m, s: m.__setitem__((0, 0, 4), 1e6), "oscar.k_mean[4] (layer 0, KV head 0, channel 4) = 1e+06"),
    ]
    for edit, want in cases:
        m, s = mean.copy(), std.copy()
        edit(m, s)
        assert want in check(m, s), (want, check(m, s))
    # the bounds themselves: a head at the edge passes, past it is refused
    s = np.ones((1, 1, 64), np.float32)
    s[0, 0, 0] = 1 / (0.99 * spread)
    assert check(np.zeros_like(s), s) == ""
    s[0, 0, 0] = 1 / (1.5 * spread)
    assert "not within" in check(np.zeros_like(s), s)
    m = np.zeros((1, 1, 64), np.float32)
    m[0, 0, 0] = 0.99 * mean_max
    assert check(m, np.ones_like(m)) == ""
    assert rms_min < 0.03 and rms_max > 1e3  # real calibrations (docs/calibration.md): V head RMS from 0.035
