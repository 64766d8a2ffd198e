"""The f16 tier inside the patched llama.cpp (patches/0006) on the default model: off is the plain path, the default
tier lowers the error, prefill and token-by-token decode agree, and cache edits and state reloads stay sound."""
from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

from oscar_gguf import load
from oscar_gguf.corpus import load_corpus
from oscar_gguf.evaluate import log_softmax
from oscar_gguf.models import resolve

N = 384


@pytest.fixture(scope="module")
def tokens():
    with load("smollm2", kv="f16", ctx=64) as m:
        return [m.llm.token_bos()] + m.llm.tokenize(load_corpus("eval").text.encode(), add_bos=False)[:N - 1]


def logits(tokens, kv="f16", n_batch=512, **kw) -> np.ndarray:
    with load("smollm2", kv=kv, ctx=1024, logits_all=True, n_batch=n_batch, **kw) as m:
        m.llm.eval(tokens)
        return np.array(m.llm.scores[:len(tokens)], dtype=np.float64)


def kld(ref: np.ndarray, x: np.ndarray, first: int = N // 2) -> float:
    a, b = log_softmax(ref[first:]), log_softmax(x[first:])
    return float((np.exp(a) * (a - b)).sum(-1).mean())


@pytest.fixture(scope="module")
def ref(tokens):
    return logits(tokens)


def plain(tokens, **kw) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(resolve("smollm2")), n_ctx=1024, n_batch=512, n_ubatch=512, type_k="oscar3",
                          type_v="oscar3", logits_all=True, verbose=False, **kw)
    llm.eval(tokens)
    out = np.array(llm.scores[:len(tokens)], dtype=np.float64)
    llm.close()
    return out


def test_our_api_is_plain_llama_cpp_python(tokens):
    """oscar_gguf keeps no defaults of its own: its cache is plain llama-cpp-python's, bit for bit, with llama.cpp's
    default tier and calibration and with both off."""
    np.testing.assert_array_equal(logits(tokens[:128], "oscar3"), plain(tokens[:128]))
    np.testing.assert_array_equal(logits(tokens[:128], "oscar3", sinks=0, window=0, calib=False),
                                  plain(tokens[:128], oscar_sinks=0, oscar_window=0, oscar_calib=False))


def test_default_tier_is_on_and_lowers_the_error(tokens, ref):
    with load("smollm2", kv="oscar2", ctx=1024) as m:
        assert (m.cache.tier_sinks, m.cache.tier_window) == (1, 128) and m.cache.tier_mib > 0
    with load("smollm2", kv="q8_0", ctx=1024) as m:
        assert m.cache.tier_mib == 0  # only OScaR caches get a tier
    bare, tiered = kld(ref, logits(tokens, "oscar2", sinks=0, window=0)), kld(ref, logits(tokens, "oscar2"))
    assert tiered < 0.25 * bare, (bare, tiered)


def test_prefill_and_decode_agree(tokens, ref):
    """A 512-token batch and one token at a time give each query the same f16 keys (the order of the sums differs,
    which this small model amplifies, so the check is on the error, not on equal logits)."""
    batch = logits(tokens, "oscar3", sinks=1, window=32)
    single = logits(tokens, "oscar3", sinks=1, window=32, n_batch=1)
    kb, ks = kld(ref, batch), kld(ref, single)
    assert abs(kb - ks) < 0.3 * max(kb, ks), (kb, ks)


def test_truncate_and_regrow(tokens, ref):
    """seq_rm of the tail (what prompt-prefix reuse does) leaves the tier without the cut window: those keys come
    from the OScaR cache until new tokens arrive, so the result stays close to a fresh run."""
    fresh = logits(tokens, "oscar3", window=32)
    with load("smollm2", kv="oscar3", ctx=1024, logits_all=True, window=32) as m:
        llm = m.llm
        llm.eval(tokens[:300])
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), 0, 250, -1)
        llm.n_tokens = 250
        llm.eval(tokens[250:])
        regrown = np.array(llm.scores[:N], dtype=np.float64)
    np.testing.assert_array_equal(regrown[:250], fresh[:250])
    assert kld(ref, regrown) < 1.3 * kld(ref, fresh) + 0.005


def test_state_reload_keeps_the_tier(tokens):
    """A saved state carries the f16 tier: reloading it and going on gives what going on directly gives."""
    with load("smollm2", kv="oscar3", ctx=1024, logits_all=True) as m:
        llm = m.llm
        llm.eval(tokens[:200])
        state = llm.save_state()
        llm.eval(tokens[200:])
        direct = np.array(llm.scores[:N], dtype=np.float64)
        llm.reset()
        llm.load_state(state)
        llm.eval(tokens[200:])
        reloaded = np.array(llm.scores[:N], dtype=np.float64)
    np.testing.assert_array_equal(reloaded, direct)


def test_bad_tier_values():
    with pytest.raises(ValueError, match="non-negative"):
        load("smollm2", kv="oscar2", ctx=64, window=-1)


def test_llama_cpp_tools_take_the_tier_flags(tmp_path, tokens):
    """--oscar-sinks/--oscar-window next to -ctk/-ctv (patches/0006, common/arg.cpp) reach the cache."""
    import subprocess

    from processes import tool

    text = tmp_path / "prose.txt"
    text.write_text(load_corpus("eval").text[:20000])
    cmd = [str(tool("llama-perplexity")), "-m", str(resolve("smollm2")), "-f", str(text), "-c", "128", "-b", "128", "--chunks", "2", "-t", "2",
           "-ctk", "oscar2", "-ctv", "oscar2", "-v"]
    r = subprocess.run(cmd + ["--oscar-sinks", "1", "--oscar-window", "32"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "oscar-gguf f16 tier: 1 sinks + 32 window per sequence" in r.stderr
    bad = subprocess.run(cmd + ["--oscar-window", "-4"], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--oscar-window must be >= 0" in bad.stderr + bad.stdout


def test_sliding_window_model_gets_the_tier():
    """Gemma 3 (the iSWA cache: sliding-window and global layers, each cache with its own tier): the default tier
    is on in both caches, lowers the error past the 512-token sliding window (where a sliding-window layer no
    longer sees the sink), and decoding the tail one token at a time (the tier written in place) agrees with
    the batch."""
    n, tail = 768, 48
    with load("gemma3-270m", kv="f16", ctx=64) as m:
        toks = [m.llm.token_bos()] + m.llm.tokenize(load_corpus("eval").text.encode(), add_bos=False)[:n - 1]

    def run(kv, step=False, **kw):
        with load("gemma3-270m", kv=kv, ctx=1024, logits_all=True, **kw) as m:
            if kv != "f16":
                assert m.cache.tier_mib > 0 or kw.get("window") == 0
            m.llm.eval(toks[:n - tail] if step else toks)
            for t in toks[n - tail:] if step else []:
                m.llm.eval([t])
            a = np.array(m.llm.scores[n - tail - 256:n], dtype=np.float64)
            return log_softmax(a)

    def err(a, b):
        return float((np.exp(a) * (a - b)).sum(-1).mean())

    ref = run("f16")
    bare, tiered, stepped = run("oscar3", sinks=0, window=0), run("oscar3"), run("oscar3", step=True)
    assert err(ref, tiered) < 0.5 * err(ref, bare), (err(ref, bare), err(ref, tiered))
    kb, ks = err(ref[-tail:], tiered[-tail:]), err(ref[-tail:], stepped[-tail:])
    assert abs(kb - ks) < 0.3 * max(kb, ks), (kb, ks)


def test_context_shift_keeps_the_tier():
    """After llama.cpp's context shift (the oldest cells dropped, the rest moved back) the tier keeps the moved
    window: its K rows are re-roped with the cells (rotated K: back, RoPE, forward) instead of leaving the tier, so
    the shifted cache stays far better than one without the tier; the main cache's second quantization costs what
    it costs without the tier (medians over 4 texts: docs/shift-spread-*.md)."""
    from cache_edits import shift_klds, shift_reference, shift_windows

    windows = shift_windows(4)
    exact = shift_reference("smollm2", windows)
    kept, shifted = (float(np.median(x)) for x in shift_klds("smollm2", windows, exact, kv="oscar2"))
    _, bare = (float(np.median(x)) for x in shift_klds("smollm2", windows, exact, kv="oscar2", sinks=0, window=0))
    assert shifted < 2.0 * kept + 0.01 and shifted < 0.4 * bare, (shifted, kept, bare)
