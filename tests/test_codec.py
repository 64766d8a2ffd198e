"""The C codec against the NumPy models of the formats (numpy_ref: oscar4's scalar code, tcq_ref: oscar2's and
oscar3's trellis codes), the Lloyd-Max theory, and bad input."""
import math

import numpy as np
import pytest

import numpy_ref as ref
import tcq_ref
from oscar_gguf import codec
from oscar_gguf.codebook import distortion, lloyd_max

KINDS = {"oscar2": 2, "oscar3": 3, "oscar4": 4}
SCALAR = {"oscar4": 4}
TRELLIS = {"oscar2": 2, "oscar3": 3}


def adversarial_rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = [
        np.zeros(64),
        np.full(64, 3.0),
        np.eye(64)[5] * 1e4,                       # one spike
        np.where(np.arange(64) % 2, -1.0, 1.0),    # alternating signs
        rng.standard_normal(64) * 1e-30,           # scale underflows fp16
        rng.standard_normal(64) * 1e-6,            # fp16 subnormal scale
        rng.standard_normal(64) * 1e5,             # scale overflows fp16: saturates
        np.full(64, 3e38),                         # near FLT_MAX
        np.r_[np.full(63, 1e-3), 1e3],             # sink-like outlier
        rng.standard_t(2, 64) * 10,                # heavy tails
        rng.standard_normal(64).astype(np.float16).astype(np.float64),
    ]
    return np.array(rows, dtype=np.float32)


def test_codebook_matches_lloyd_iteration():
    np.testing.assert_allclose(codec.codebook("oscar4"), lloyd_max(4), rtol=0, atol=2e-7)


@pytest.mark.parametrize("kind", TRELLIS)
def test_trellis_codebooks_are_the_tables(kind):
    cb = codec.codebook(kind)
    assert cb.shape == (256,) and np.isfinite(cb).all() and np.abs(cb).max() < 4


def test_lloyd_max_distortion_matches_published_values():
    # Max (1960): 0.1175, 0.03455, 0.009500 for 2, 3, 4 bits
    assert [round(distortion(lloyd_max(b)), 4) for b in (2, 3, 4)] == [0.1175, 0.0345, 0.0095]


def rows_of(data: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return {
        "gaussian": lambda: rng.standard_normal((200, 256)),
        "adversarial": adversarial_rows,
        "uniform": lambda: rng.uniform(-1, 1, (50, 128)),
        "lowrank": lambda: rng.standard_normal((40, 1)) * rng.standard_normal((1, 192)) + 0.01 * rng.standard_normal((40, 192)),
    }[data]().astype(np.float32)


@pytest.mark.parametrize("kind,bits", SCALAR.items())
@pytest.mark.parametrize("data", ["gaussian", "adversarial", "uniform", "lowrank"])
def test_c_matches_numpy_reference(kind, bits, data):
    x = rows_of(data, bits)
    q = codec.quantize(x, kind)
    codes_c, scales_c = ref.unpack(q, bits)
    codes_r, scales_r = ref.encode(x, bits)
    np.testing.assert_array_equal(codes_c, codes_r)
    np.testing.assert_allclose(scales_c.astype(np.float32), scales_r.astype(np.float32), rtol=2 ** -10, atol=2 ** -24)
    np.testing.assert_array_equal(ref.pack(codes_r, scales_c, bits), q.reshape(-1, ref.BLOCK_BYTES[bits]))
    np.testing.assert_array_equal(codec.dequantize(q, kind, x.shape[-1]).ravel(), ref.decode(q, bits))


@pytest.mark.parametrize("kind,bits", TRELLIS.items())
@pytest.mark.parametrize("data", ["gaussian", "adversarial", "uniform", "lowrank"])
def test_trellis_decodes_as_the_model(kind, bits, data):
    """oscar2 and oscar3 rows decode as tcq_ref.decode of their streams (the encoder itself: tests/test_tcq_c.py)."""
    x = rows_of(data, bits)
    q = codec.quantize(x, kind).reshape(-1, 2 + 8 * bits)
    stream = np.unpackbits(q[:, 2:], axis=1, bitorder="little")
    scale = q[:, :2].copy().view("<f2")[:, 0].astype(np.float32)
    model = tcq_ref.decode(stream, codec.codebook(kind).astype(np.float64), bits).astype(np.float32)
    np.testing.assert_array_equal(codec.dequantize(q, kind, 64), scale[:, None] * model)


@pytest.mark.parametrize("kind,bits", SCALAR.items())
def test_gaussian_error_is_lloyd_max_distortion(kind, bits):
    x = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
    y = codec.dequantize(codec.quantize(x, kind), kind, 64)
    rel = ((x - y) ** 2).sum() / (x ** 2).sum()
    # Scaling a row to norm 8 puts its entries on a sphere, whose tails are lighter than N(0,1)'s:
    # measured 6 % below the Lloyd-Max distortion for 4 bits (the trellis codes: test_tcq_c).
    assert 0.92 * distortion(lloyd_max(bits)) <= rel <= 1.02 * distortion(lloyd_max(bits))


@pytest.mark.parametrize("kind", KINDS)
def test_norm_is_preserved(kind):
    x = np.random.default_rng(1).standard_normal((100, 64)).astype(np.float32) * 7
    y = codec.dequantize(codec.quantize(x, kind), kind, 64)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=2e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_special_values(kind):
    rows = np.zeros((6, 64), dtype=np.float32)
    rows[1, 3] = np.nan
    rows[2, :] = 1.0
    rows[2, 7] = np.inf
    rows[3, :] = -np.inf
    rows[4, :] = 1e30
    rows[5, :] = 1e-30
    y = codec.dequantize(codec.quantize(rows, kind), kind, 64)
    assert np.all(y[0] == 0)                      # zeros stay zeros
    assert np.all(np.isnan(y[1]))                 # a NaN poisons its block: the norm is undefined
    assert np.all(np.isfinite(y[2:]))             # infinities and huge values saturate, finite out
    assert y[2, 7] == y[2].max() and y[2, 7] > 1000
    assert np.all(y[3] < 0) and np.abs(y[3]).max() <= 65504 * 3
    assert np.all(y[5] == 0)                      # scale underflows to zero


@pytest.mark.parametrize("kind", KINDS)
def test_dot_matches_dequantized_dot(kind):
    rng = np.random.default_rng(3)
    for n in (64, 128, 256):
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        q = codec.quantize(x, kind)
        expect = float(codec.dequantize(q, kind, n).astype(np.float64) @ y)
        assert codec.dot(q, y, kind) == pytest.approx(expect, rel=1e-5, abs=1e-4)


def test_bits_per_element():
    assert [codec.bits_per_element(k) for k in KINDS] == [2.25, 3.25, 4.25]


def test_bad_arguments_raise_value_error():
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match="valid types: f32"):
        codec.quantize(x, "oscar5")
    with pytest.raises(ValueError, match="not an OScaR type"):
        codec.quantize(x, "q4_0")
    with pytest.raises(ValueError, match="multiple of 64"):
        codec.quantize(np.zeros((2, 65), np.float32), "oscar2")
    with pytest.raises(ValueError, match="float"):
        codec.quantize(np.zeros(64, dtype=object), "oscar2")
    q = codec.quantize(x, "oscar3")
    with pytest.raises(ValueError, match="bytes"):
        codec.dequantize(q, "oscar3", 128)
    with pytest.raises(ValueError, match="uint8"):
        codec.dequantize(q.astype(np.int16), "oscar3", 64)
    with pytest.raises(ValueError, match="multiple of 64"):
        codec.dequantize(q, "oscar3", 0)
    assert math.isfinite(codec.bits_per_element("oscar2"))
