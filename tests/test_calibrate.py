"""oscar-gguf calibrate: statistics against NumPy, what the cache really stores, the metadata round trip, stock
llama.cpp compatibility, mismatch refusal and safe writing."""
from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oscar_gguf import calibmeta, cli
from oscar_gguf.calibmeta import CalibrationError, check_matches, read_calibration
from oscar_gguf.calibrate import calibrate, calibration_text, collect
from oscar_gguf.ggufmeta import read_gguf
from oscar_gguf.ggufwrite import write_with_metadata

from gguf_edits import with_calibration_fields, with_edited_weights

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(tokens=1200, seq_len=512, progress=False)  # one decode per sequence: row 0 of each write is the sink


def hadamard(n: int) -> np.ndarray:
    """Orthonormal Sylvester-ordered Walsh-Hadamard matrix, from its definition."""
    i = np.arange(n)
    bits = np.vectorize(lambda x: bin(x).count("1"))(i[:, None] & i[None, :])
    return (1.0 - 2.0 * (bits % 2)) / np.sqrt(n)


def rows_at(data: int, n_rows: int, row_len: int, stride: int) -> np.ndarray:
    buf = (ctypes.c_char * ((n_rows - 1) * stride + 4 * row_len)).from_address(data)
    flat = np.frombuffer(buf, dtype=np.uint8)
    return np.lib.stride_tricks.as_strided(flat.view(np.float32), (n_rows, row_len), (stride, 4)).copy()


class Capture:
    """A sink that copies the rows of a few layers (tests only: calibration itself never copies)."""

    def __init__(self, layers):
        self.layers, self.rows = set(layers), {}

    def __call__(self, kind, layer, data, n_rows, row_len, stride):
        if layer in self.layers:
            self.rows.setdefault((kind, layer), []).append(rows_at(data, n_rows, row_len, stride))


@pytest.fixture(scope="module")
def calibrated(smollm2_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "smollm2-cal.gguf"
    cal = calibrate(smollm2_path, out, **SMALL)
    return out, cal


def test_hadamard_matches_definition():
    from oscar_gguf._native import lib

    ffi, c = lib()
    x = np.random.default_rng(0).standard_normal(3 * 256).astype(np.float32)
    for n in (64, 128, 256):
        y = x.copy()
        c.oscar_hadamard(ffi.cast("float *", y.ctypes.data), y.size, n)
        want = (x.reshape(-1, n).astype(np.float64) @ hadamard(n).T).ravel()
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_calib_add_sums_strided_rows_and_skips():
    from oscar_gguf._native import lib

    ffi, c = lib()
    x = np.random.default_rng(1).standard_normal((5, 200)).astype(np.float32)  # rows of 128 in a wider buffer
    total, total_sq = np.zeros(128), np.zeros(128)
    f = ffi.cast("float *", x.ctypes.data)
    dp = lambda a: ffi.cast("double *", a.ctypes.data)  # noqa: E731
    assert c.oscar_calib_add(dp(total), dp(total_sq), f, 5, 128, x.strides[0], 2, 64) == 0
    rot = (x[2:, :128].astype(np.float64).reshape(3, 2, 64) @ hadamard(64).T).reshape(3, 128)
    np.testing.assert_allclose(total, rot.sum(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(total_sq, (rot * rot).sum(axis=0), rtol=1e-5, atol=1e-5)
    before = total.copy()
    assert c.oscar_calib_add(dp(total), dp(total_sq), f, 5, 128, x.strides[0], 0, 0) == 0  # rot 0: as stored
    np.testing.assert_allclose(total - before, x[:, :128].sum(axis=0), rtol=1e-5, atol=1e-5)
    for bad_rot in (48, 256, 1):  # not a power of two, not dividing the row, too small
        assert c.oscar_calib_add(dp(total), dp(total_sq), f, 5, 128, x.strides[0], 0, bad_rot) == -1
    assert c.oscar_calib_add(dp(total), dp(total_sq), f, 1, c.OSCAR_CALIB_MAX_ROW + 64, 0, 0, 0) == -1


def test_rotation_sizes_follow_llama_cpp():
    from oscar_gguf.ggufmeta import AttentionShape

    for d, want in ((64, 64), (128, 128), (192, 64), (256, 256), (320, 64)):
        assert calibmeta.rotation_sizes(AttentionShape("x", 1, 1, 1, d, d)) == (want, 64), d


def test_statistics_match_numpy_on_captured_rows(smollm2_path):
    layers = (0, 13, 29)
    cap = Capture(layers)
    acc = collect(smollm2_path, calibration_text(), extra_sink=cap, **SMALL)
    shape = acc.shape
    for kind, d in (("k", shape.head_dim_k), ("v", shape.head_dim_v)):
        rot = acc.rot[kind]
        h = hadamard(rot)
        mean, std = acc.mean_std(kind)
        for layer in layers:
            x = np.concatenate([r[1:] for r in cap.rows[kind, layer]]).astype(np.float64)  # sinks left out
            assert len(x) == acc.count[kind][layer]
            x = (x.reshape(len(x), -1, rot) @ h.T).reshape(len(x), shape.n_head_kv, d)
            np.testing.assert_allclose(mean[layer], x.mean(axis=0), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(std[layer], x.std(axis=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model, rot_k", [("smollm2", 64), ("gemma3-270m", 256)])
def test_statistics_are_what_a_quantized_cache_stores(model, rot_k):
    """With a quantized cache llama.cpp rotates K and V in the graph and the tap sees the rotated rows it quantizes;
    our rotation of the f16 cache's rows must give the same statistics. Layer 0's K/V do not depend on the cache,
    so they agree to float rounding; deeper layers differ by the quantization error upstream (measured with q8_0 on
    SmolLM2: mean within 2 % of the spread, spread within 0.7 %; oscar4 about 5 times that). Gemma 3 checks the
    256-wide K rotation and the sliding-window layers' cache."""
    text = calibration_text()
    ours = collect(model, text, **SMALL)
    assert ours.rot == {"k": rot_k, "v": 64}
    for cache in ("oscar4", "q8_0"):
        theirs = collect(model, text, cache=cache, **SMALL)
        assert theirs.rot == {"k": 0, "v": 0}
        for kind in "kv":
            (m1, s1), (m2, s2) = ours.mean_std(kind), theirs.mean_std(kind)
            np.testing.assert_allclose(m1[0], m2[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(s1[0], s2[0], rtol=1e-4, atol=1e-5)
            if cache == "q8_0":
                assert (np.abs(m1 - m2) / s1).max() < 0.05, kind
                assert np.abs(s2 / s1 - 1).max() < 0.02, kind


def test_metadata_round_trip(smollm2_path, calibrated):
    from gguf import GGUFReader

    out, cal = calibrated
    src, dst = GGUFReader(str(smollm2_path), "r"), GGUFReader(str(out), "r")
    for key, field in src.fields.items():
        if key.startswith("GGUF."):
            continue
        assert dst.fields[key].types == field.types, key
        assert dst.fields[key].contents() == field.contents(), key
    assert [t.name for t in dst.tensors] == [t.name for t in src.tensors]
    for a, b in zip(src.tensors, dst.tensors):
        assert (a.tensor_type, list(a.shape)) == (b.tensor_type, list(b.shape)), a.name
        assert np.array_equal(a.data.view(np.uint8), b.data.view(np.uint8)), a.name
    added = {k for k in dst.fields if k.startswith("oscar.")}
    assert added == {k for k, _, _ in cal.fields()}
    for key, value, tname in cal.fields():
        got = dst.fields[key].contents()
        if tname.endswith("_ARRAY"):
            assert np.array_equal(np.array(got, dtype=np.float32), value), key
        else:
            assert got == value, key
    back = read_calibration(out)
    assert back is not None and back.fingerprint == cal.fingerprint == calibmeta.model_fingerprint(read_gguf(smollm2_path))
    for name in ("k_mean", "k_std", "v_mean", "v_std"):
        assert np.array_equal(getattr(back, name), getattr(cal, name)), name
    assert (back.tokens, back.seq_len, back.n_layer, back.n_head_kv, back.head_dim_k) == (cal.tokens, 512, 30, 3, 64)
    assert cal.tokens == SMALL["tokens"]  # every text token: each sequence's left-out first token is its BOS
    assert "howto/" in back.text and len(back.text_sha256) == 64
    assert (cal.k_std > 0).all() and (cal.v_std > 0).all()


def test_model_without_calibration_reads_none(smollm2_path):
    assert read_calibration(smollm2_path) is None


def f16_logits(path: Path, tokens: list[int]) -> np.ndarray:
    from oscar_gguf.chat import load

    with load(path, kv="f16", ctx=256, logits_all=True, n_threads=2) as m:
        m.llm.eval(tokens)
        return np.array(m.llm.scores[: len(tokens)])


def test_f16_logits_bit_identical(smollm2_path, calibrated, prose):
    from oscar_gguf.chat import load

    with load(smollm2_path, kv="f16", ctx=256) as m:
        toks = m.llm.tokenize(prose.encode(), add_bos=True)[:200]
    assert np.array_equal(f16_logits(smollm2_path, toks), f16_logits(calibrated[0], toks))


STOCK_SCRIPT = """
import ctypes, json, pathlib, sys
import numpy as np
import llama_cpp
from llama_cpp import Llama
lib = pathlib.Path(llama_cpp.llama_cpp._lib._name).parent
patched = [s for s in ("oscar2_quantize_row", "oscar_tier_place") for f in ("libggml-base.so", "libllama.so")
           if hasattr(ctypes.CDLL(str(lib / f)), s)]
out = {"module": llama_cpp.__file__, "lib": str(lib), "patched": patched, "logits": []}
for path in sys.argv[2:]:
    llm = Llama(path, n_ctx=256, logits_all=True, n_threads=2, flash_attn=True, verbose=False)
    toks = llm.tokenize(b"The calibration metadata must not change what stock llama.cpp computes.", add_bos=True)
    llm.eval(toks)
    np.save(sys.argv[1] + f"/logits{len(out['logits'])}.npy", np.array(llm.scores[:len(toks)]))
    out["logits"].append(len(toks))
    llm.close()
print(json.dumps(out))
"""


def test_stock_llama_cpp_loads_calibrated_file(smollm2_path, calibrated, stock_llama, tmp_path):
    """The unpatched pinned llama-cpp-python (its own Python package and libllama) loads the calibrated file and
    computes exactly the input's logits with the f16 cache."""
    pythonpath, lib_dir = stock_llama
    env = dict(os.environ, PYTHONPATH=str(pythonpath), LLAMA_CPP_LIB_PATH=str(lib_dir))
    env.pop("OSCAR_NATIVE_LIB", None)
    r = subprocess.run([sys.executable, "-c", STOCK_SCRIPT, str(tmp_path), str(smollm2_path), str(calibrated[0])],
                       env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["module"].startswith(str(pythonpath)) and out["lib"] == str(lib_dir) and out["patched"] == []
    a, b = np.load(tmp_path / "logits0.npy"), np.load(tmp_path / "logits1.npy")
    assert a.shape[0] > 5 and np.isfinite(a).all() and np.array_equal(a, b)


@pytest.mark.parametrize("field, value, named", [
    ("n_layer", 24, "layers: calibration 24, model 30"),
    ("n_head_kv", 5, "KV heads: calibration 5, model 3"),
    ("head_dim_k", 128, "K head size: calibration 128, model 64"),
    ("rot_v", 128, "V rotation: calibration 128, model 64"),
    ("fingerprint", "sha256:" + "0" * 64, "tensor fingerprint"),
])
def test_mismatch_is_refused_naming_it(smollm2_path, calibrated, field, value, named):
    cal = dataclasses.replace(calibrated[1], **{field: value})
    with pytest.raises(CalibrationError, match=named):
        check_matches(cal, read_gguf(smollm2_path))


def test_calibration_of_another_model_is_refused(calibrated):
    from oscar_gguf.models import resolve

    with pytest.raises(CalibrationError) as e:
        read_calibration(resolve("gemma3-270m"), source=calibrated[0])
    msg = str(e.value)
    assert "layers: calibration 30, model 18" in msg and "KV heads: calibration 3, model 1" in msg
    assert "K head size: calibration 64, model 256" in msg


def test_edited_weights_are_refused(calibrated, tmp_path):
    out = with_edited_weights(calibrated[0], tmp_path / "edited.gguf")
    with pytest.raises(CalibrationError, match="tensor fingerprint"):
        read_calibration(out)


def test_broken_calibration_metadata_is_refused(smollm2_path, calibrated, tmp_path):
    cal, out = calibrated[1], tmp_path / "short.gguf"
    with_calibration_fields(smollm2_path, cal, out, **{calibmeta.KEY_K_MEAN: lambda v: v[:-1]})
    with pytest.raises(CalibrationError, match="oscar.k_mean has 5759 values, expected 30 layers x 3 KV heads"):
        read_calibration(out)
    with_calibration_fields(smollm2_path, cal, out, **{calibmeta.KEY_VERSION: lambda v: 99})
    with pytest.raises(CalibrationError, match="format version 99"):
        read_calibration(out)


def interrupt_after(n: int):
    """A GGUFWriter.write_tensor_data that writes n tensors, then raises KeyboardInterrupt (Ctrl-C mid-write)."""
    import gguf

    real, calls = gguf.GGUFWriter.write_tensor_data, []

    def write_tensor_data(writer, tensor, *a, **k):
        calls.append(1)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(writer, tensor, *a, **k)

    return write_tensor_data


def test_interrupted_write_leaves_no_file(smollm2_path, calibrated, tmp_path, monkeypatch):
    import gguf

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", interrupt_after(20))
    dst = tmp_path / "out.gguf"
    with pytest.raises(KeyboardInterrupt):
        write_with_metadata(smollm2_path, dst, calibrated[1].fields(), calibmeta.PREFIX, progress=False)
    assert list(tmp_path.iterdir()) == []
    dst.write_bytes(b"an older output")  # an interrupted rewrite keeps the old file whole
    monkeypatch.undo()
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", interrupt_after(5))
    with pytest.raises(KeyboardInterrupt):
        write_with_metadata(smollm2_path, dst, calibrated[1].fields(), calibmeta.PREFIX, progress=False)
    assert list(tmp_path.iterdir()) == [dst] and dst.read_bytes() == b"an older output"


def test_refuses_to_overwrite_the_input(smollm2_path, tmp_path, capsys):
    model = tmp_path / "m.gguf"
    os.symlink(smollm2_path, model)
    (tmp_path / "sub").mkdir()
    for out in (model, smollm2_path, tmp_path / "sub" / ".." / "m.gguf"):
        with pytest.raises(ValueError, match="refusing to overwrite the input"):
            calibrate(model, out, **SMALL)
    assert cli.main(["calibrate", str(model), str(smollm2_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("oscar-gguf: error: refusing to overwrite the input") and "\n" not in err
    with pytest.raises(ValueError, match="output directory does not exist"):
        calibrate(model, tmp_path / "absent" / "out.gguf", **SMALL)


def test_dry_run_writes_nothing(smollm2_path, tmp_path, capsys):
    out = tmp_path / "dry.gguf"
    assert cli.main(["calibrate", str(smollm2_path), str(out), "--dry-run", "--tokens", "300", "--seq-len", "256"]) == 0
    assert list(tmp_path.iterdir()) == []
    printed = capsys.readouterr().out
    for key in ("oscar.version", "oscar.fingerprint", "oscar.k_mean", "oscar.v_std", "dry run: nothing written"):
        assert key in printed, key


def test_own_text_and_recalibration(calibrated, tmp_path, prose):
    """--text names the user's file; calibrating a calibrated file replaces its oscar.* keys."""
    text = tmp_path / "mine.txt"
    text.write_text(prose[:20000])
    out = tmp_path / "again.gguf"
    assert cli.main(["calibrate", str(calibrated[0]), str(out), "--text", str(text), "--tokens", "600",
                     "--seq-len", "300"]) == 0
    cal = read_calibration(out)
    assert cal.text == "mine.txt" and cal.tokens == 600 and cal.seq_len == 300
    assert cal.fingerprint == calibrated[1].fingerprint
    meta = read_gguf(out).metadata
    assert sum(k.startswith("oscar.") for k in meta) == len(calibrated[1].fields())


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    from test_bad_input import tiny_gguf

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    cut = tiny_gguf(tmp_path / "cut.gguf", 64)
    cut.write_bytes(cut.read_bytes()[:-7])
    empty = tiny_gguf(tmp_path / "empty.gguf", 64)  # valid GGUF, no tensors: llama.cpp cannot load it
    short = tmp_path / "short.txt"
    short.write_text("Too short to calibrate on.")
    cases = [([str(tmp_path / "absent.gguf")], "model file not found"),
             ([str(junk)], "not a GGUF file"),
             ([str(cut)], "truncated"),
             ([str(empty)], "Failed to load model"),
             (["smollm2", "--text", str(tmp_path / "none.txt")], "cannot read calibration text"),
             (["smollm2", "--text", str(short)], "at least 64 are needed")]
    for args, msg in cases:
        assert cli.main(["calibrate", args[0], str(tmp_path / "out.gguf"), *args[1:]]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("oscar-gguf: error:") and msg in err and "\n" not in err, (args, err)
    assert not (tmp_path / "out.gguf").exists()
