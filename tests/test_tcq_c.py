"""oscar2's bitshift-trellis 2-bit code (native/oscar_tcq.c, oscar_tcq_block.h) against its NumPy model
(tests/tcq_ref.py): decode, the two-pass encoder, each element decoding alone, special values, the gain over the
scalar 2-bit Lloyd-Max code it replaced (tests/numpy_ref.py), the committed codebook, and the same bytes from every
build of the encoder."""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import cffi
import numpy as np
import pytest

import numpy_ref
import tcq_ref
from oscar_gguf import _native
from oscar_gguf.codebook import distortion, lloyd_max

ROOT = Path(__file__).resolve().parent.parent
L = 8
BYTES = 18
FLT_MAX = np.finfo(np.float32).max


@pytest.fixture(scope="module")
def native():
    return _native.lib()


def codebook(native) -> np.ndarray:
    ffi, C = native
    return np.frombuffer(ffi.buffer(C.oscar_tcq_codebook(), 4 << L), dtype=np.float32).copy()


def quantize(native, x: np.ndarray) -> np.ndarray:
    ffi, C = native
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.zeros((len(x), BYTES), dtype=np.uint8)
    C.oscar_quantize_row(2, ffi.cast("float *", x.ctypes.data), ffi.cast("void *", q.ctypes.data), x.size)
    return q


def dequantize(native, q: np.ndarray) -> np.ndarray:
    ffi, C = native
    q = np.ascontiguousarray(q, dtype=np.uint8)
    y = np.zeros((len(q), tcq_ref.BLOCK), dtype=np.float32)
    C.oscar_dequantize_row(2, ffi.cast("void *", q.ctypes.data), ffi.cast("float *", y.ctypes.data), y.size)
    return y


def stream_bits(q: np.ndarray) -> np.ndarray:
    """[B, 128] the circular streams of blocks q: stream bit b is bit b % 8 of code byte b / 8."""
    return np.unpackbits(q[:, 2:], axis=1, bitorder="little")


def windows(q: np.ndarray) -> np.ndarray:
    """[B, 64] the windows w_j (the L stream bits from 2j on, wrapping) of blocks q."""
    idx = (2 * np.arange(tcq_ref.BLOCK)[:, None] + np.arange(L)[None, :]) % (2 * tcq_ref.BLOCK)
    return (stream_bits(q)[:, idx].astype(np.int64) << np.arange(L)).sum(-1)


def scales(q: np.ndarray) -> np.ndarray:
    return q[:, :2].copy().view("<f2")[:, 0].astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """u = x 8 / ||x|| as the C encoder works it: squares of the floats summed in order in double."""
    x64 = np.clip(x.astype(np.float64), -FLT_MAX, FLT_MAX)
    norm = np.sqrt(np.cumsum(x64 ** 2, axis=1)[:, -1])
    return x64 * (8.0 / norm)[:, None]


def test_decode_matches_the_model(native):
    """Random streams and scales: each element is float32(scale) x codebook[window], exactly."""
    rng = np.random.default_rng(0)
    cb = codebook(native)
    q = rng.integers(0, 256, (300, BYTES), dtype=np.uint8)
    q[:, :2] = (rng.standard_normal(300) * 4).astype("<f2").view(np.uint8).reshape(-1, 2)
    q[0, :2] = np.array([1.0], "<f2").view(np.uint8)
    model = tcq_ref.decode(stream_bits(q), cb.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(dequantize(native, q), scales(q)[:, None] * model)


def test_every_element_decodes_alone(native):
    """Element j from its own window: the 16 code bytes as one little-endian 128-bit circle, bits 2j .. 2j + 7."""
    cb = codebook(native)
    q = quantize(native, np.random.default_rng(1).standard_normal((40, 64)))
    y = dequantize(native, q)
    for row, qb in zip(y, q):
        circle = int.from_bytes(qb[2:].tobytes(), "little")
        circle |= circle << 128
        d = np.float32(qb[:2].copy().view("<f2")[0])
        assert [d * cb[(circle >> 2 * j) & 0xff] for j in range(64)] == list(row)


def test_encoder_matches_the_two_pass_model(native):
    """The C encoder on seeded Gaussian rows against tcq_ref.encode (two passes, float64) on the same unit rows:
    the same streams as the model on the C's grid (values and codebook rounded to multiples of 2^-9, where the C
    path costs are exact integers); against the model without rounding, 15-24 rows of 1000 pick other streams
    (near-ties, seeds 0-29) and the total squared error moves by -2.0e-4 .. +1.1e-4 of itself: noise."""
    cb = codebook(native)
    x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    q = quantize(native, x)
    w = windows(q)
    np.testing.assert_array_equal(tcq_ref.stream(w, L), stream_bits(q))  # a closed path, packed as documented
    u = unit_rows(x)
    np.testing.assert_array_equal(w, tcq_ref.encode(u, cb.astype(np.float64), grid=tcq_ref.GRID))
    ref = tcq_ref.encode(u, cb.astype(np.float64))
    err_c = ((u - cb[w]) ** 2).sum(1)
    err_r = ((u - cb[ref]) ** 2).sum(1)
    assert (w != ref).any(axis=1).sum() <= 40
    assert abs(err_c.sum() - err_r.sum()) < 5e-4 * err_r.sum()
    # the scale keeps the norm, as oscar2's: fp16(norm / ||codebook[w]||), the squares summed in order
    lv2 = np.cumsum(cb[w].astype(np.float64) ** 2, axis=1)[:, -1]
    norm = np.sqrt(np.cumsum(x.astype(np.float64) ** 2, axis=1)[:, -1])
    np.testing.assert_array_equal(scales(q), (norm / np.sqrt(lv2)).astype(np.float32).astype(np.float16))


def test_special_values(native):
    rng = np.random.default_rng(2)
    g = rng.standard_normal(64).astype(np.float32)
    sub = (g * 2.0 ** -140).astype(np.float32)  # fp32 subnormals
    rows = {
        "zeros": np.zeros(64),
        "nan": np.r_[g[:10], np.nan, g[11:]],
        "inf": np.r_[g[:7], np.inf, g[8:]],
        "inf as max": np.r_[g[:7], FLT_MAX, g[8:]],
        "-inf": np.full(64, -np.inf),
        "-max": np.full(64, -FLT_MAX),
        "subnormal": sub,
        "subnormal, scaled up": sub.astype(np.float64) * 2.0 ** 100,  # the same u: the scaling is exact
        "one huge": np.r_[np.full(63, 1e-3), 3e38],
        "one spike": np.eye(64)[5] * 1e4 + 0.01 * g,
        "constant": np.full(64, 3.0),
        "negative constant": np.full(64, -3.0),
    }
    names = list(rows)
    q = quantize(native, np.array([rows[k] for k in names], dtype=np.float32))
    y = dequantize(native, q)
    r = {k: (q[i], y[i]) for i, k in enumerate(names)}
    assert not r["zeros"][0].any() and not r["zeros"][1].any()  # zero scale, zero codes
    assert r["nan"][0][:2].view("<u2")[0] == 0x7E00 and not r["nan"][0][2:].any() and np.isnan(r["nan"][1]).all()
    np.testing.assert_array_equal(r["inf"][0], r["inf as max"][0])  # +-Inf count as +-FLT_MAX
    np.testing.assert_array_equal(r["-inf"][0], r["-max"][0])
    for k in names[2:]:
        assert np.isfinite(r[k][1]).all(), k
    assert r["-max"][0][:2].view("<u2")[0] == 0x7BFF  # the scale saturates at 65504
    assert not r["subnormal"][1].any()  # its scale underflows fp16
    np.testing.assert_array_equal(r["subnormal"][0][2:], r["subnormal, scaled up"][0][2:])
    big = r["one huge"][1]
    assert big.argmax() == 63 and big[63] > 1e4
    # A spike forces its neighbours' windows (they share its bits), yet costs less than the scalar code's 63 levels
    # of 0.45: measured 0.25 against 1.23 of the block's energy.
    x, spike = rows["one spike"].astype(np.float32), r["one spike"][1]
    assert np.abs(spike).argmax() == 5 and spike[5] > 8e3
    assert ((spike - x) ** 2).sum() < 0.5 * ((scalar_roundtrip(x[None])[0] - x) ** 2).sum()
    for k, sign in (("constant", 1), ("negative constant", -1)):
        yc = r[k][1].astype(np.float64)
        assert np.linalg.norm(yc) == pytest.approx(24.0, rel=2e-3)  # the norm is kept
        assert sign * yc.sum() / np.linalg.norm(yc) > 7.5  # measured 8.0 (exact) and 7.69: no -1 cycle in the table


def scalar_roundtrip(x: np.ndarray) -> np.ndarray:
    """x through the scalar 2-bit Lloyd-Max code oscar2 had before the trellis (tests/numpy_ref.py)."""
    codes, scales = numpy_ref.encode(x, 2)
    return numpy_ref.decode(numpy_ref.pack(codes, scales, 2), 2).reshape(x.shape)


def test_mse_against_the_scalar_code(native):
    """Blocks of 64 N(0,1): relative squared error against the scalar 2-bit code (the same rows) and the Lloyd-Max
    distortion. Over seeds 1000-1004 (2000 rows each) the ratio to the scalar code was 0.697-0.704 (docs/tcq-mse.md:
    0.703 for its L = 8 codebooks), the scalar code 1 % below the Lloyd-Max distortion (rows on a sphere)."""
    x = np.random.default_rng(1000).standard_normal((2000, 64)).astype(np.float32)
    y, y2 = dequantize(native, quantize(native, x)), scalar_roundtrip(x)
    ss = (x.astype(np.float64) ** 2).sum()
    rel, rel2 = ((x - y) ** 2).sum() / ss, ((x - y2) ** 2).sum() / ss
    assert rel < 0.72 * rel2 and rel < 0.72 * distortion(lloyd_max(2))


def test_codebook_is_regenerated():
    """The committed table is train_codebook's output (the settings in scripts/tcq_codebook.py), to float32, and
    the header is what the script writes. Trains in about 30 s on one core."""
    spec = importlib.util.spec_from_file_location("tcq_codebook", ROOT / "scripts" / "tcq_codebook.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    cb = gen.codebook()
    assert np.abs(cb).max() < 4  # the cost bounds of oscar_tcq_block.h assume it
    np.testing.assert_array_equal(cb.astype(np.float16).astype(np.float32), cb)  # the decoders' half tables are exact
    assert gen.HEADER.read_text() == gen.render(cb)
    np.testing.assert_array_equal(codebook(_native.lib()), cb)


BUILDS = {
    "portable-c": ["-O2", "-DOSCAR_PORTABLE_C"],             # the scalar Viterbi of oscar_tcq_block.h
    "baseline-isa": ["-O2"],                                # AVX2 chosen at run time
    "native-fma": ["-O3", "-march=native", "-ffp-contract=fast", "-DOSCAR_PORTABLE_C"],  # scalar, auto-vectorized
    "no-opt": ["-O0", "-DOSCAR_PORTABLE_C"],
}


@pytest.mark.parametrize("build", BUILDS)
def test_every_build_writes_the_same_bytes(native, tmp_path, build):
    """Integer path costs: scalar and SIMD, contracted and plain builds pick the same streams, ties included:
    periodic rows tie exactly (paths through the same states in another order or phase cost the same integers);
    making any of the four tie rules <= instead of < changes the bytes of 1-80 of their 300 rows."""
    lib = tmp_path / "liboscar.so"
    src = ROOT / "native"
    subprocess.run(["cc", *BUILDS[build], "-shared", "-fPIC", f"-I{src}", str(src / "oscar.c"), str(src / "oscar_tcq.c"),
                    "-o", str(lib), "-lm"], check=True)
    ffi = cffi.FFI()
    ffi.cdef(_native._cdef(_native._header_text()))
    other = (ffi, ffi.dlopen(str(lib)))
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal((1500, 64)), rng.standard_t(2, (300, 64)) * 10,
                        rng.standard_normal((200, 1)) * rng.standard_normal((1, 64)),
                        np.tile(rng.standard_normal((300, 2)), 32), np.tile(rng.standard_normal((300, 4)), 16),
                        rng.standard_normal((300, 64)) * (rng.random((300, 64)) < 0.1),
                        np.linspace(-3, 3, 64)[:, None] * np.ones(64)]).astype(np.float32)
    np.testing.assert_array_equal(quantize(other, x), quantize(native, x))
    np.testing.assert_array_equal(dequantize(other, quantize(native, x)), dequantize(native, quantize(native, x)))
