"""The OScaR types inside the patched llama.cpp, driven through llama-cpp-python on the default model."""
import numpy as np
import pytest

from oscar_gguf import evaluate
from oscar_gguf.bench import expected_kv_bytes
from oscar_gguf.chat import load

from cache_edits import after_dropping

OSCAR = ["oscar2", "oscar3", "oscar4"]
PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def greedy_f16(smollm2_path):
    with load(smollm2_path, kv="f16", ctx=512) as m:
        return m.llm.tokenize(m.chat(PROMPT, max_tokens=24, temperature=0.0)["choices"][0]["message"]["content"].encode(), add_bos=False)


@pytest.mark.parametrize("kv", OSCAR)
def test_greedy_generation_follows_f16(smollm2_path, greedy_f16, kv):
    with load(smollm2_path, kv=kv, ctx=512) as m:
        assert m.cache.type_k == kv and m.cache.type_v == kv
        assert (m.cache.attn_rot_k, m.cache.attn_rot_v) == (64, 64)  # llama.cpp's Hadamard rotation is on
        out = m.chat(PROMPT, max_tokens=24, temperature=0.0)
        text = out["choices"][0]["message"]["content"]
        toks = m.llm.tokenize(text.encode(), add_bos=False)
    assert toks[:5] == greedy_f16[:5]  # "The capital of France is"
    if kv != "oscar2":  # oscar2 without calibration or the f16 tier (DESIGN.md section 5) may still drift here
        assert "Paris" in text


def test_mixed_k_and_v_types(smollm2_path):
    with load(smollm2_path, kv_k="q8_0", kv_v="oscar3", ctx=256) as m:
        assert (m.cache.type_k, m.cache.type_v) == ("q8_0", "oscar3")
        assert m.chat(PROMPT, max_tokens=8, temperature=0.0)["choices"][0]["message"]["content"]


def test_streaming_chat_is_openai_shaped(smollm2_path):
    with load(smollm2_path, kv="oscar2", ctx=256) as m:
        chunks = list(m.chat(PROMPT, stream=True, max_tokens=8, temperature=0.0))
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


@pytest.mark.parametrize("kv", ["f16", "q4_0"] + OSCAR)
def test_kv_buffer_size_is_bits_times_elements(smollm2_path, kv):
    with load(smollm2_path, kv=kv, ctx=1024) as m:
        (cache,) = m.cache.caches
        k, v = expected_kv_bytes(m.shape, cache.cells, cache.layers, kv)
    assert cache.type_k == kv and cache.cells == 1024 and cache.layers == 30
    assert cache.k_mib == k / 2 ** 20 and cache.v_mib == v / 2 ** 20


def test_kld_orders_bits(smollm2_path, prose):
    """oscar4 < oscar3 < oscar2 in KL divergence from the f16 cache, on real prose."""
    types = ["f16"] + OSCAR
    models = {t: load(smollm2_path, kv=t, ctx=512, logits_all=True) for t in types}
    ref_llm = models["f16"].llm
    toks = ref_llm.tokenize(prose.encode(), add_bos=True)
    kld = {t: [] for t in OSCAR}
    for c in range(2):
        chunk = toks[c * 512:(c + 1) * 512]
        ref = evaluate.chunk_logits(ref_llm, chunk)[256:-1]
        for t in OSCAR:
            kld[t].append(evaluate.compare(ref, evaluate.chunk_logits(models[t].llm, chunk)[256:-1], np.array(chunk[257:]))[0])
    means = {t: float(np.concatenate(v).mean()) for t, v in kld.items()}
    for m in models.values():
        m.close()
    assert 0 < means["oscar4"] < means["oscar3"] < means["oscar2"] < 1.0, means


@pytest.mark.parametrize("kv", ["f16"] + OSCAR)
def test_context_shift_requantizes_k_correctly(smollm2_path, prose, kv):
    """Attention depends only on relative positions, so shifting the cache must give (nearly) the same
    next-token distributions as not shifting it. A shift that corrupted K would give KLDs of several nats."""
    with load(smollm2_path, kv=kv, ctx=512, logits_all=True) as m, load(smollm2_path, kv="f16", ctx=512, logits_all=True) as ref:
        toks = m.llm.tokenize(prose.encode(), add_bos=True)[:336]
        shifted = after_dropping(m.llm, toks, 96, shift=True)
        kept = after_dropping(m.llm, toks, 96, shift=False)
        exact = after_dropping(ref.llm, toks, 96, shift=False)
    targets = np.array(toks[-16:])
    kld_shift = evaluate.compare(exact, shifted, targets)[0].mean()
    kld_kept = evaluate.compare(exact, kept, targets)[0].mean()
    assert np.isfinite(shifted).all()
    if kv == "f16":
        assert kld_shift < 0.01  # f16 rounding of the re-roped K
    else:  # K is quantized a second time: measured 1.1-2.5x the unshifted error for q4_0 and oscar types
        assert kld_shift < 3 * kld_kept + 0.02, (kld_shift, kld_kept)


def test_gemma3_head_dim_256_and_sliding_window_caches():
    """Gemma 3: head size 256 (four blocks per head) and two caches (sliding-window and global layers)."""
    outs = {}
    for kv in ("f16", "oscar3"):
        with load("gemma3-270m", kv=kv, ctx=1024) as m:
            caches = m.cache.caches
            assert len(caches) == 2 and all(c.type_k == kv for c in caches)
            for c in caches:
                k, v = expected_kv_bytes(m.shape, c.cells, c.layers, kv)
                assert c.k_mib == k / 2 ** 20 and c.v_mib == v / 2 ** 20
            assert (m.cache.attn_rot_k, m.cache.attn_rot_v) == ((0, 0) if kv == "f16" else (256, 64))
            text = m.llm.create_completion("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"]
            outs[kv] = m.llm.tokenize(text.encode(), add_bos=False)
    assert outs["oscar3"][:3] == outs["f16"][:3]
