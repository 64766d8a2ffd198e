"""The bitshift-trellis codes of oscar2 (2 bits per element) and oscar3 (3 bits) (native/oscar_tcq.c,
oscar_tcq_block.h) against their NumPy model (tests/tcq_ref.py): decode, the two-pass encoder, each element decoding
alone, special values, the gain over the scalar Lloyd-Max codes they replaced (tests/numpy_ref.py), the committed
codebooks, and the same bytes from every build of the encoder. Tests take s, the bits per element."""
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
WIDTHS = (2, 3)
FLT_MAX = np.finfo(np.float32).max


@pytest.fixture(scope="module")
def native():
    return _native.lib()


def nbytes(s: int) -> int:
    return 2 + 8 * s


def codebook(native, s: int) -> np.ndarray:
    ffi, C = native
    return np.frombuffer(ffi.buffer(C.oscar_tcq_codebook(s), 4 << L), dtype=np.float32).copy()


def quantize(native, x: np.ndarray, s: int) -> np.ndarray:
    ffi, C = native
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.zeros((len(x), nbytes(s)), dtype=np.uint8)
    C.oscar_quantize_row(s, ffi.cast("float *", x.ctypes.data), ffi.cast("void *", q.ctypes.data), x.size)
    return q


def dequantize(native, q: np.ndarray, s: int) -> np.ndarray:
    ffi, C = native
    q = np.ascontiguousarray(q, dtype=np.uint8)
    y = np.zeros((len(q), tcq_ref.BLOCK), dtype=np.float32)
    C.oscar_dequantize_row(s, ffi.cast("void *", q.ctypes.data), ffi.cast("float *", y.ctypes.data), y.size)
    return y


def stream_bits(q: np.ndarray) -> np.ndarray:
    """[B, 64 s] the circular streams of blocks q: stream bit b is bit b % 8 of code byte b / 8."""
    return np.unpackbits(q[:, 2:], axis=1, bitorder="little")


def windows(q: np.ndarray, s: int) -> np.ndarray:
    """[B, 64] the windows w_j (the L stream bits from sj on, wrapping) of blocks q."""
    idx = (s * np.arange(tcq_ref.BLOCK)[:, None] + np.arange(L)[None, :]) % (s * tcq_ref.BLOCK)
    return (stream_bits(q)[:, idx].astype(np.int64) << np.arange(L)).sum(-1)


def scales(q: np.ndarray) -> np.ndarray:
    return q[:, :2].copy().view("<f2")[:, 0].astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """u = x 8 / ||x|| as the C encoder works it: squares of the floats summed in order in double."""
    x64 = np.clip(x.astype(np.float64), -FLT_MAX, FLT_MAX)
    norm = np.sqrt(np.cumsum(x64 ** 2, axis=1)[:, -1])
    return x64 * (8.0 / norm)[:, None]


@pytest.mark.parametrize("s", WIDTHS)
def test_decode_matches_the_model(native, s):
    """Random streams and scales: each element is float32(scale) x codebook[window], exactly."""
    rng = np.random.default_rng(0)
    cb = codebook(native, s)
    q = rng.integers(0, 256, (300, nbytes(s)), dtype=np.uint8)
    q[:, :2] = (rng.standard_normal(300) * 4).astype("<f2").view(np.uint8).reshape(-1, 2)
    q[0, :2] = np.array([1.0], "<f2").view(np.uint8)
    model = tcq_ref.decode(stream_bits(q), cb.astype(np.float64), s).astype(np.float32)
    np.testing.assert_array_equal(dequantize(native, q, s), scales(q)[:, None] * model)


@pytest.mark.parametrize("s", WIDTHS)
def test_every_element_decodes_alone(native, s):
    """Element j from its own window: the 8s code bytes as one little-endian circle of 64s bits, bits sj .. sj + 7."""
    cb = codebook(native, s)
    q = quantize(native, np.random.default_rng(1).standard_normal((40, 64)), s)
    y = dequantize(native, q, s)
    n = 64 * s
    for row, qb in zip(y, q):
        circle = int.from_bytes(qb[2:].tobytes(), "little")
        circle |= circle << n
        d = np.float32(qb[:2].copy().view("<f2")[0])
        assert [d * cb[(circle >> s * j) & 0xff] for j in range(64)] == list(row)


@pytest.mark.parametrize("s", WIDTHS)
@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_rows_decode_as_rows_one_by_one(native, s, blocks):
    """oscar_tcq_rows_to_float (the CPU attention's tile decode): any rows of a strided matrix, in any order and
    repeated, more than one set-up's worth (64 rows) included, equal oscar_dequantize_row row by row."""
    ffi, C = native
    rng = np.random.default_rng(blocks)
    n_rows, row_bytes = 150, blocks * nbytes(s)
    mat = np.zeros((n_rows, row_bytes + 5), dtype=np.uint8)  # 5 bytes of other data between rows
    mat[:, :row_bytes] = quantize(native, rng.standard_normal((n_rows * blocks, 64)), s).reshape(n_rows, row_bytes)
    rows = np.concatenate([rng.integers(0, n_rows, 97), [0, n_rows - 1, n_rows - 1]]).astype(np.int64)
    out = np.zeros((len(rows), 64 * blocks), dtype=np.float32)
    C.oscar_tcq_rows_to_float(s, ffi.cast("char *", mat.ctypes.data), mat.strides[0],
                              ffi.cast("int64_t *", rows.ctypes.data), len(rows), 64 * blocks,
                              ffi.cast("float *", out.ctypes.data))
    want = dequantize(native, mat[:, :row_bytes].reshape(-1, nbytes(s)), s).reshape(n_rows, 64 * blocks)[rows]
    np.testing.assert_array_equal(out, want)


# Rows of 1000 (seeds 0-29) whose stream differs from the unrounded model's, and the change of total squared error
# relative to it, measured: s = 2: 15-24 rows, -2.0e-4 .. +1.1e-4; s = 3 (8 predecessors, more near-ties): 38-67
# rows, -7.4e-5 .. +1.4e-4.
NEAR_TIES = {2: (40, 5e-4), 3: (90, 5e-4)}


@pytest.mark.parametrize("s", WIDTHS)
def test_encoder_matches_the_two_pass_model(native, s):
    """The C encoder on seeded Gaussian rows against tcq_ref.encode (two passes, float64) on the same unit rows:
    the same streams as the model on the C's grid (values and codebook rounded to multiples of 2^-9, where the C
    path costs are exact integers); against the model without rounding, a few rows pick other streams (near-ties,
    NEAR_TIES) and the total squared error moves by noise."""
    cb = codebook(native, s)
    x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    q = quantize(native, x, s)
    w = windows(q, s)
    np.testing.assert_array_equal(tcq_ref.stream(w, L, s), stream_bits(q))  # a closed path, packed as documented
    u = unit_rows(x)
    np.testing.assert_array_equal(w, tcq_ref.encode(u, cb.astype(np.float64), grid=tcq_ref.GRID, step=s))
    ref = tcq_ref.encode(u, cb.astype(np.float64), step=s)
    err_c = ((u - cb[w]) ** 2).sum(1)
    err_r = ((u - cb[ref]) ** 2).sum(1)
    rows, rel = NEAR_TIES[s]
    assert (w != ref).any(axis=1).sum() <= rows
    assert abs(err_c.sum() - err_r.sum()) < rel * err_r.sum()
    # the scale keeps the norm, as oscar4's: fp16(norm / ||codebook[w]||), the squares summed in order
    lv2 = np.cumsum(cb[w].astype(np.float64) ** 2, axis=1)[:, -1]
    norm = np.sqrt(np.cumsum(x.astype(np.float64) ** 2, axis=1)[:, -1])
    np.testing.assert_array_equal(scales(q), (norm / np.sqrt(lv2)).astype(np.float32).astype(np.float16))


# A spike forces its neighbours' windows (they share its bits), yet costs less than the scalar code's levels on the
# other 63 elements: measured 0.20 (s = 2) and 0.034 (s = 3) of the scalar code's error. Constant rows of 3 and -3
# code with sum / norm (8 at most) of 8.0 and 7.69 (s = 2), 7.97 and 7.94 (s = 3).
SPIKE = {2: 0.5, 3: 0.1}


@pytest.mark.parametrize("s", WIDTHS)
def test_special_values(native, s):
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
    q = quantize(native, np.array([rows[k] for k in names], dtype=np.float32), s)
    y = dequantize(native, q, s)
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
    x, spike = rows["one spike"].astype(np.float32), r["one spike"][1]
    assert np.abs(spike).argmax() == 5 and spike[5] > 8e3
    assert ((spike - x) ** 2).sum() < SPIKE[s] * ((scalar_roundtrip(x[None], s)[0] - x) ** 2).sum()
    for k, sign in (("constant", 1), ("negative constant", -1)):
        yc = r[k][1].astype(np.float64)
        assert np.linalg.norm(yc) == pytest.approx(24.0, rel=2e-3)  # the norm is kept
        assert sign * yc.sum() / np.linalg.norm(yc) > 7.5  # no cycle of the table strays far from the constant


def scalar_roundtrip(x: np.ndarray, s: int) -> np.ndarray:
    """x through the scalar Lloyd-Max code of s bits the trellis replaced (tests/numpy_ref.py)."""
    codes, scales = numpy_ref.encode(x, s)
    return numpy_ref.decode(numpy_ref.pack(codes, scales, s), s).reshape(x.shape)


# Relative squared error against the scalar code on the same rows, over seeds 1000-1004 (2000 rows each): s = 2:
# 0.697-0.704 (docs/tcq-mse.md: 0.703 for its L = 8 codebooks); s = 3: 0.676-0.687 (docs/tcq-mse-3bit.md: 0.680 for its L = 8 codebooks).
GAIN = {2: 0.72, 3: 0.70}


@pytest.mark.parametrize("s", WIDTHS)
def test_mse_against_the_scalar_code(native, s):
    """Blocks of 64 N(0,1): relative squared error against the scalar code of the same width (the same rows) and
    the Lloyd-Max distortion (the scalar code lies 1 % below it: rows on a sphere)."""
    x = np.random.default_rng(1000).standard_normal((2000, 64)).astype(np.float32)
    y, y2 = dequantize(native, quantize(native, x, s), s), scalar_roundtrip(x, s)
    ss = (x.astype(np.float64) ** 2).sum()
    rel, rel2 = ((x - y) ** 2).sum() / ss, ((x - y2) ** 2).sum() / ss
    assert rel < GAIN[s] * rel2 and rel < GAIN[s] * distortion(lloyd_max(s))


def test_codebooks_are_regenerated():
    """The committed tables are train_codebook's output (the settings in scripts/tcq_codebook.py), to float32, and
    the header is what the script writes. Trains in about 30 s on one core."""
    spec = importlib.util.spec_from_file_location("tcq_codebook", ROOT / "scripts" / "tcq_codebook.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    cbs = {s: gen.codebook(s) for s in gen.STEPS}
    assert tuple(cbs) == WIDTHS
    for s, cb in cbs.items():
        assert np.abs(cb).max() < 4  # the cost bounds of oscar_tcq_block.h assume it
        np.testing.assert_array_equal(cb.astype(np.float16).astype(np.float32), cb)  # half tables are exact
        np.testing.assert_array_equal(codebook(_native.lib(), s), cb)
    assert gen.HEADER.read_text() == gen.render(cbs)


BUILDS = {
    "portable-c": ["-O2", "-DOSCAR_PORTABLE_C"],             # the scalar Viterbi of oscar_tcq_block.h
    "baseline-isa": ["-O2"],                                # AVX2 and AVX-512 chosen at run time
    "avx2-only": ["-O2", "-DOSCAR_NO_AVX512"],              # the AVX2 decode where AVX-512 would be chosen
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
    for s in WIDTHS:
        q = quantize(native, x, s)
        np.testing.assert_array_equal(quantize(other, x, s), q)
        np.testing.assert_array_equal(dequantize(other, q, s), dequantize(native, q, s))
