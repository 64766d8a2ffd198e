"""The calibration applied inside the patched llama.cpp (patches/0007): the affine transform against NumPy, exact
by construction (a cache that keeps every token in the f16 tier gives the uncalibrated logits), better than
uncalibrated on the default model, kept through a context shift and on the sliding-window model, and refused
in words when it does not fit the model."""
from __future__ import annotations

import subprocess
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from oscar_gguf import _native as native
from oscar_gguf import cli, llamalog, load
from oscar_gguf.calibmeta import KEY_K_MEAN, CalibrationError, read_calibration
from oscar_gguf.corpus import load_corpus
from oscar_gguf.evaluate import log_softmax
from oscar_gguf.kvtypes import kv_type

from gguf_edits import with_calibration_fields, with_edited_weights

N = 768


def affine_numpy(mean, std, group, keep_mean):
    s, m = std.reshape(-1, group).astype(np.float64), mean.reshape(-1, group).astype(np.float64)
    ok = np.isfinite(s).all(1, keepdims=True) & np.isfinite(m).all(1, keepdims=True)
    rms = np.where(ok, np.sqrt((np.where(ok, s, 0) ** 2).mean(1, keepdims=True)), 0)
    scale = np.where(rms > 0, np.maximum(s, 1e-6 * rms), 1.0)
    m = np.where((rms > 0) & keep_mean, m, 0.0)
    return np.stack([scale, 1 / scale, -m / scale, m]).reshape(4, -1).astype(np.float32)


@pytest.mark.parametrize("keep_mean", [1, 0])
def test_affine_matches_numpy(keep_mean):
    ffi, lib = native.lib()
    rng = np.random.default_rng(7)
    g, heads = 64, 5
    mean = rng.normal(0, 3, g * heads).astype(np.float32)
    std = rng.lognormal(0, 1.5, g * heads).astype(np.float32)
    std[3] = 0.0                 # a dead channel: floored, not a division by zero
    std[g:2 * g] = 0.0           # a dead head: identity
    std[2 * g + 5] = np.nan      # a broken head: identity
    out = np.empty(4 * g * heads, np.float32)
    lib.oscar_calib_affine(ffi.from_buffer("float[]", mean), ffi.from_buffer("float[]", std), g * heads, g, keep_mean,
                           ffi.from_buffer("float[]", out))
    want = affine_numpy(mean, std, g, keep_mean)
    np.testing.assert_allclose(out.reshape(4, -1), want, rtol=1e-6)
    assert np.all(out.reshape(4, -1)[:, g:3 * g][[0, 1]] == 1) and np.all(out.reshape(4, -1)[:, g:3 * g][[2, 3]] == 0)


@pytest.fixture(scope="module")
def tokens():
    with load("smollm2", kv="f16", ctx=64) as m:
        return [m.llm.token_bos()] + m.llm.tokenize(load_corpus("eval").text.encode(), add_bos=False)[:N - 1]


def run(model, tokens, kv="f16", **kw) -> tuple[np.ndarray, object]:
    with load(model, kv=kv, ctx=1024, logits_all=True, **kw) as m:
        m.llm.eval(tokens)
        return log_softmax(np.array(m.llm.scores[:len(tokens)], dtype=np.float64)), m.cache


def kld(a: np.ndarray, b: np.ndarray, first: int = N // 2) -> float:
    return float((np.exp(a[first:]) * (a[first:] - b[first:])).sum(-1).mean())


def test_transform_is_exact(smollm2_calibrated, tokens):
    """With every token in the f16 tier nothing is quantized, so the calibrated graph (Q times the K scale, K and V
    standardized, the output scaled back) must give what the uncalibrated one gives, to f16 rounding."""
    full = dict(sinks=1, window=1024)
    cal, cache = run(smollm2_calibrated, tokens, "oscar4", **full)
    plain, plain_cache = run(smollm2_calibrated, tokens, "oscar4", calib=False, **full)
    assert cache.calibrated and not plain_cache.calibrated
    ref, _ = run(smollm2_calibrated, tokens)
    # f16 rows of other values round differently: the same size as f16 vs f16 through another kernel (0.004,
    # docs/NOTES.md); a transform not undone exactly costs nats
    between, to_ref, plain_to_ref = kld(plain, cal, 1), kld(ref, cal, 1), kld(ref, plain, 1)
    print(f"KLD calibrated vs uncalibrated {between:.5f}; vs f16 cache: calibrated {to_ref:.5f}, "
          f"uncalibrated {plain_to_ref:.5f}")
    assert between < 0.01 and to_ref < 1.5 * plain_to_ref + 1e-3, (between, to_ref, plain_to_ref)


def test_calibrated_is_better_than_uncalibrated(smollm2_calibrated, tokens):
    ref, _ = run(smollm2_calibrated, tokens)
    for kv, tier in (("oscar3", dict(sinks=0, window=0)), ("oscar2", {})):
        plain = kld(ref, run(smollm2_calibrated, tokens, kv, calib=False, **tier)[0])
        cal = kld(ref, run(smollm2_calibrated, tokens, kv, **tier)[0])
        assert cal < plain, (kv, plain, cal)


def test_context_shift_undoes_the_transform(smollm2_calibrated):
    """The K-shift re-ropes calibrated K (scale and mean off, rotate back, RoPE, rotate, on again), with the tier and
    without. It also quantizes K a second time, which costs 0.9-2.5x the unshifted error on a single text
    (docs/shift-spread-*.md, AVX-512 and AVX2 builds), so the checks are medians over 4 texts: calibrated no worse
    than uncalibrated after the same shift (a transform not undone costs far more than calibration saves), and
    within the price of the second quantization."""
    from cache_edits import shift_klds, shift_reference, shift_windows

    windows = shift_windows(4)
    exact = shift_reference(smollm2_calibrated, windows)
    for tier in ({}, dict(sinks=0, window=0)):
        kept, shifted = (float(np.median(x)) for x in shift_klds(smollm2_calibrated, windows, exact, kv="oscar3",
                                                                 **tier))
        _, plain = (float(np.median(x)) for x in shift_klds(smollm2_calibrated, windows, exact, kv="oscar3",
                                                              calib=False, **tier))
        assert shifted < 1.25 * plain + 0.005 and shifted < 2.0 * kept + 0.01, (tier, shifted, plain, kept)


def test_sliding_window_model(tmp_path):
    """Gemma 3 (iSWA: a global and a sliding-window cache, 256-wide K rotation): the calibration is applied in both
    caches and is exact through the f16 tier."""
    from oscar_gguf.calibrate import calibrate
    from oscar_gguf.models import resolve

    out = tmp_path / "gemma-cal.gguf"
    calibrate(resolve("gemma3-270m"), out, tokens=2 * 511, seq_len=512, progress=False)
    with load(out, kv="f16", ctx=64) as m:
        toks = [m.llm.token_bos()] + m.llm.tokenize(load_corpus("eval").text.encode(), add_bos=False)[:255]
    full = dict(sinks=1, window=1024)
    with load(out, kv="oscar3", ctx=256) as m:
        assert m.log.text.count("oscar-gguf: calibration applied to K and V") == 2  # global and sliding-window caches
    cal, cache = run(out, toks, "oscar3", **full)
    assert cache.calibrated
    plain, _ = run(out, toks, "oscar3", calib=False, **full)
    assert kld(plain, cal, 1) < 0.01, kld(plain, cal, 1)


def llama(path: Path, kv: str, calib: int) -> tuple[str, bool]:
    """llama-cpp-python straight (no oscar_gguf check first): llama.cpp's own refusal, and its log."""
    t = kv_type(kv).ggml_type
    with llamalog.capture() as log:
        try:
            llama_cpp.Llama(model_path=str(path), n_ctx=256, flash_attn=True, type_k=t, type_v=t, oscar_calib=calib,
                            verbose=False).close()
            ok = True
        except ValueError:
            ok = False
    return log.text, ok


def test_mismatch_is_refused_by_llama_cpp_and_by_python(smollm2_calibrated, tmp_path):
    bad = with_edited_weights(smollm2_calibrated, tmp_path / "edited.gguf")
    text, ok = llama(bad, "oscar3", 1)
    assert not ok and "calibration does not match the model" in text and "tensor fingerprint: calibration" in text
    assert "--oscar-calib off" in text
    assert llama(bad, "oscar3", 0)[1] and llama(bad, "f16", 1)[1]  # off, or a cache that does not use it: loads
    with pytest.raises(CalibrationError, match="tensor fingerprint"):
        load(bad, kv="oscar3", ctx=256)
    load(bad, kv="oscar3", ctx=256, calib=False).close()


def test_broken_metadata_is_refused_by_llama_cpp(smollm2_path, smollm2_calibrated, tmp_path):
    out = with_calibration_fields(smollm2_path, read_calibration(smollm2_calibrated), tmp_path / "short.gguf",
                                  **{KEY_K_MEAN: lambda v: v[:-1]})
    text, ok = llama(out, "oscar2", 1)
    assert not ok and "oscar.k_mean (5760 float32 values)" in text


def test_uncalibrated_model_gets_a_notice(smollm2_path, capsys):
    with load(smollm2_path, kv="oscar3", ctx=256) as m:
        assert not m.cache.calibrated and m.calibration is None
        assert "the model has no calibration, the OScaR cache runs uncalibrated" in m.log.text
    assert cli.main(["chat", "--model", str(smollm2_path), "--kv", "oscar3", "--ctx", "256", "--prompt", "Hi",
                     "--max-tokens", "2"]) == 0
    assert "uncalibrated: `oscar-gguf calibrate` adds a calibration" in capsys.readouterr().err


def test_llama_cpp_tools_take_the_calibration_flag(smollm2_calibrated, tmp_path):
    from processes import tool

    text = tmp_path / "prose.txt"
    text.write_text(load_corpus("eval").text[:20000])
    cmd = [str(tool("llama-perplexity")), "-m", str(smollm2_calibrated), "-f", str(text), "-c", "128", "-b", "128", "--chunks", "1",
           "-t", "2", "-ctk", "oscar3", "-ctv", "oscar3", "-v"]
    on = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    off = subprocess.run(cmd + ["--oscar-calib", "off"], capture_output=True, text=True, timeout=600)
    assert on.returncode == 0 and "calibration applied to K and V" in on.stderr, on.stderr[-2000:]
    assert off.returncode == 0 and "calibration is off" in off.stderr


def test_variants_measure_both_ways():
    from oscar_gguf.kvtypes import Variant, variants

    v = variants(["q4_0", "oscar2"], [(1, 128)], "both")
    assert v == {"q4_0": Variant("q4_0", None, None), "oscar2 s1w128": Variant("oscar2", 1, 128, False),
                 "oscar2 s1w128 +cal": Variant("oscar2", 1, 128, True)}
    assert variants(["oscar3"], None, "off") == {"oscar3": Variant("oscar3", None, None, False)}
    with pytest.raises(ValueError, match="calib must be one of"):
        variants(["oscar3"], None, "sometimes")
