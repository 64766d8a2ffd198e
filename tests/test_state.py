"""Saved states carry what their cache was made with (each cache's state starts with an OScaR header): a state made
with other settings is refused in words before anything changes, the token count and the cache included, through
llama-cpp-python's whole-context states and llama.cpp's per-sequence ones."""
from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from oscar_gguf import load
from oscar_gguf.corpus import load_corpus


@pytest.fixture(scope="module")
def tokens():
    with load("smollm2", kv="f16", ctx=64) as m:
        return [m.llm.token_bos()] + m.llm.tokenize(load_corpus("eval").text.encode(), add_bos=False)[:239]


def saved(tokens, **kw):
    with load("smollm2", ctx=512, **kw) as m:
        m.llm.eval(tokens[:120])
        return m.llm.save_state()


@pytest.mark.parametrize("saved_with, loaded_with, why", [
    (dict(kv="oscar3"), dict(kv="oscar3", sinks=0, window=0), "tier sinks: saved 1, this cache 0"),
    (dict(kv="oscar3", sinks=0, window=0), dict(kv="oscar3"), "tier window: saved 0, this cache 128"),
    (dict(kv="oscar3"), dict(kv="oscar3", calib=False), "calibrated K: saved 1, this cache 0"),
    (dict(kv="f16"), dict(kv="oscar3"), "K type: saved 1, this cache 44"),
    (dict(kv="oscar3"), dict(kv="oscar2"), "K type: saved 44, this cache 43"),
])
def test_state_of_other_settings_is_refused_and_changes_nothing(tokens, saved_with, loaded_with, why):
    state = saved(tokens, **saved_with)
    with load("smollm2", ctx=512, logits_all=True, **loaded_with) as m:
        llm = m.llm
        llm.eval(tokens[:60])
        with pytest.raises(RuntimeError, match=f"saved with other KV cache settings.*{why}"):
            llm.load_state(state)
        assert llm.n_tokens == 60
        llm.eval(tokens[60:])
        after = np.array(llm.scores[:len(tokens)])
        llm.reset()
        llm.eval(tokens)
        untouched = np.array(llm.scores[:len(tokens)])
    np.testing.assert_array_equal(after, untouched)


def test_sequence_state_of_other_settings_is_refused(tokens):
    with load("smollm2", kv="oscar3", ctx=512) as m:
        m.llm.eval(tokens[:80])
        ctx = m.llm._ctx.ctx
        n = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * n)()
        assert llama_cpp.llama_state_seq_get_data(ctx, buf, n, 0) == n
    with load("smollm2", kv="oscar3", ctx=512, window=0) as m:
        ctx = m.llm._ctx.ctx
        m.llm.eval(tokens[:30])
        mem = llama_cpp.llama_get_memory(ctx)
        before = llama_cpp.llama_memory_seq_pos_max(mem, 0)
        assert llama_cpp.llama_state_seq_set_data(ctx, buf, n, 1) == 0
        assert llama_cpp.llama_memory_seq_pos_max(mem, 0) == before == 29
        assert llama_cpp.llama_memory_seq_pos_max(mem, 1) == -1


def test_sequence_state_round_trip_keeps_the_tier(tokens):
    """What llama-server's prompt cache does: a sequence's state, restored into an emptied cache, goes on as the
    original would (its f16 tier included)."""
    with load("smollm2", kv="oscar3", ctx=512, logits_all=True) as m:
        llm, ctx = m.llm, m.llm._ctx.ctx
        llm.eval(tokens[:150])
        n = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * n)()
        assert llama_cpp.llama_state_seq_get_data(ctx, buf, n, 0) == n
        llm.eval(tokens[150:])
        direct = np.array(llm.scores[150:len(tokens)])
        mem = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_clear(mem, True)
        assert llama_cpp.llama_state_seq_set_data(ctx, buf, n, 0) == n
        llm.n_tokens = 150
        llm.eval(tokens[150:])
        restored = np.array(llm.scores[150:len(tokens)])
    np.testing.assert_array_equal(restored, direct)
