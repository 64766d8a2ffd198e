"""oscar_attn_part / oscar_attn_merge (native/oscar_attn.c), the CPU attention over the main OScaR cache and the f16
tier with one softmax, against NumPy on random and adversarial data: one query row, the query heads of a KV head
together (each with its ALiBi slope), and the rows split into parts as ggml-cpu's threads split them."""
from __future__ import annotations

import numpy as np
import pytest

from oscar_gguf import _native, codec

DK = DV = 128


class Source:
    """One K/V source: OScaR-coded (kind) or plain float32 rows (kind None), with an fp16 mask."""

    def __init__(self, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, kind: str | None):
        self.kind, self.n = kind, len(k)
        self.mask = None if mask is None else np.ascontiguousarray(mask, dtype=np.float16)
        if kind:
            self.kb, self.vb = codec.quantize(k, kind), codec.quantize(v, kind)
            self.k, self.v = codec.dequantize(self.kb, kind, DK), codec.dequantize(self.vb, kind, DV)
        else:
            self.kb = self.k = np.ascontiguousarray(k, dtype=np.float32)
            self.vb = self.v = np.ascontiguousarray(v, dtype=np.float32)


def attn_parts(q: np.ndarray, sources: list[Source], scale=0.1, softcap=0.0, max_bias=0.0, h0=0, n_head=None,
               cuts=()) -> np.ndarray:
    """oscar_attn_part for the queries q [nq rows, g heads of one KV head, DK] (or [g, DK], or [DK]); a source's
    mask may be [nq, n] (one per query row). The sources' rows are cut at the given points into several parts (one
    per range, as ggml-cpu's threads split them): parts [len(cuts) + 1, nq g, 2 + DV]."""
    ffi, lib = _native.lib()
    q = np.ascontiguousarray(q.reshape(-1, *q.shape[-2:]) if q.ndim == 3 else np.atleast_2d(q)[None], dtype=np.float32)
    nq, g, total = q.shape[0], q.shape[1], sum(c.n for c in sources)
    keep = []  # buffers must outlive the call
    bounds = [0, *cuts, total]
    parts = np.empty((len(bounds) - 1, nq * g, 2 + DV), dtype=np.float32)
    scratch = np.empty(lib.oscar_attn_scratch(DK, DV, nq, g), dtype=np.float32)
    for pi, (r0, r1) in enumerate(zip(bounds[:-1], bounds[1:])):
        src, off = ffi.new("oscar_attn_src[]", len(sources)), 0
        for s, c in zip(src, sources):
            lo, hi = min(max(r0 - off, 0), c.n), min(max(r1 - off, 0), c.n)
            off += c.n
            kb, vb = ffi.from_buffer("char[]", c.kb[lo:hi]), ffi.from_buffer("char[]", c.vb[lo:hi])
            keep += [kb, vb]
            s.k, s.v, s.n = kb, vb, hi - lo
            s.nbk, s.nbv = c.kb.strides[0], c.vb.strides[0]
            m = None if c.mask is None else np.ascontiguousarray(np.broadcast_to(c.mask, (nq, c.n))[:, lo:hi])
            keep.append(m)
            s.mask = ffi.NULL if m is None else ffi.cast("uint16_t *", ffi.from_buffer(m))
            s.mask_row = hi - lo
            bits = c.kind[-1] if c.kind else None
            s.k_to_float = ffi.addressof(lib, f"oscar{bits}_dequantize_row") if bits else ffi.NULL
            s.v_to_float = s.k_to_float
        lib.oscar_attn_part(src, len(sources), nq, g, ffi.from_buffer("float[]", q), g * DK, DK, DK, DV, scale,
                            softcap, max_bias, h0, n_head or g, ffi.from_buffer("float[]", parts[pi]),
                            ffi.from_buffer("float[]", scratch))
    return parts


def merge(parts: np.ndarray, sink=None) -> np.ndarray:
    """oscar_attn_merge of each query row's parts: [g, DV]."""
    ffi, lib = _native.lib()
    out = np.empty((parts.shape[1], DV), dtype=np.float32)
    sk = ffi.NULL if sink is None else ffi.new("float *", sink)
    for j in range(parts.shape[1]):
        p = np.ascontiguousarray(parts[:, j])
        lib.oscar_attn_merge(ffi.from_buffer("float[]", p), len(p), 2 + DV, DV, sk, ffi.from_buffer("float[]", out[j]))
    return out


def attn_row(q: np.ndarray, sources: list[Source], scale=0.1, softcap=0.0, slope=1.0, sink=None) -> np.ndarray:
    """One query row: the part of all rows, merged. slope != 1 goes in as the ALiBi slope of head 0 of 1."""
    max_bias = 0.0 if slope == 1.0 else -float(np.log2(slope))  # head 0 of 1: slope = 2^-max_bias
    return merge(attn_parts(q, sources, scale, softcap, max_bias), sink)[0]


def reference(q, sources, scale=0.1, softcap=0.0, slope=1.0, sink=None) -> np.ndarray:
    k = np.concatenate([s.k for s in sources]).astype(np.float64)
    v = np.concatenate([s.v for s in sources]).astype(np.float64)
    m = np.concatenate([np.zeros(s.n) if s.mask is None else s.mask.astype(np.float64) for s in sources])
    l = scale * (k @ q.astype(np.float64))
    if softcap:
        l = softcap * np.tanh(l / softcap)
    with np.errstate(invalid="ignore"):
        l = l + slope * m
    live = np.isfinite(l)
    if not live.any() and sink is None:
        return np.zeros(DV)
    top = max(l[live].max() if live.any() else -np.inf, -np.inf if sink is None else sink)
    w = np.where(live, np.exp(np.where(live, l, 0) - top), 0.0)
    den = w.sum() + (0.0 if sink is None else np.exp(sink - top))
    return (w @ v) / den


def random_case(rng, kind, n_main=100, n_tier=24, masked=0.3):
    def mask(n):
        m = rng.normal(0, 1, n)
        m[rng.random(n) < masked] = -np.inf
        return m
    main = Source(rng.normal(0, 1, (n_main, DK)), rng.normal(0, 1, (n_main, DV)), mask(n_main), kind)
    tier = Source(rng.normal(0, 1, (n_tier, DK)), rng.normal(0, 1, (n_tier, DV)), mask(n_tier), None)
    return rng.normal(0, 1, DK), main, tier


@pytest.mark.parametrize("kind", ["oscar2", "oscar3", "oscar4"])
@pytest.mark.parametrize("opts", [{}, {"softcap": 3.0}, {"slope": 0.25, "sink": 1.5}, {"scale": 2.0, "sink": -40.0}])
def test_two_sources_match_numpy(kind, opts):
    rng = np.random.default_rng(7)
    for _ in range(3):
        q, main, tier = random_case(rng, kind)
        got, want = attn_row(q, [main, tier], **opts), reference(q, [main, tier], **opts)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_masked_tier_equals_one_source():
    """A tier whose rows are all masked leaves the main-cache result bit for bit (the W = 0, S = 0 path)."""
    rng = np.random.default_rng(1)
    q, main, tier = random_case(rng, "oscar3")
    tier.mask[:] = -np.inf
    np.testing.assert_array_equal(attn_row(q, [main, tier]), attn_row(q, [main]))
    empty = Source(np.zeros((0, DK)), np.zeros((0, DV)), np.zeros(0), None)
    np.testing.assert_array_equal(attn_row(q, [main, empty]), attn_row(q, [main]))


def test_order_of_rows_does_not_matter():
    """Moving rows between the sources (a token entering or leaving the tier) keeps the softmax."""
    rng = np.random.default_rng(2)
    q = rng.normal(0, 1, DK)
    k, v, m = rng.normal(0, 1, (60, DK)), rng.normal(0, 1, (60, DV)), rng.normal(0, 1, 60)
    whole = attn_row(q, [Source(k, v, m, None)])
    for cut in (0, 1, 30, 59, 60):
        split = attn_row(q, [Source(k[cut:], v[cut:], m[cut:], None), Source(k[:cut], v[:cut], m[:cut], None)])
        np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)


def test_adversarial_logits():
    rng = np.random.default_rng(3)
    q, main, tier = random_case(rng, "oscar2", masked=0.0)
    # everything masked: zeros, with or without a tier; a sink alone also gives zeros
    for s in (main, tier):
        s.mask[:] = -np.inf
    assert not attn_row(q, [main, tier]).any()
    assert not attn_row(q, [main, tier], sink=3.0).any()
    # one row dominates late in the tier (the running max moves after many rows), huge logit gaps
    main.mask[:] = 0
    tier.mask[:] = 0
    tier.mask[-1] = 60000.0
    got = attn_row(q, [main, tier], scale=1.0)
    np.testing.assert_allclose(got, tier.v[-1], rtol=1e-6, atol=1e-6)
    # the first row dominates, all later ones underflow to zero weight
    main.mask[:] = -60000.0
    main.mask[0] = 0.0
    tier.mask[:] = -60000.0
    np.testing.assert_allclose(attn_row(q, [main, tier]), main.v[0], rtol=1e-6, atol=1e-6)


# --- the ggml op: ggml_flash_attn_ext + ggml_flash_attn_ext_add_tier on the CPU backend (patches/0005) ---

def fa_case(rng, kind, tier_type, d=128, n_head=6, n_head_kv=2, n_seq=2, n_q=3, n_kv=96, n_kv2=20, masked=0.3):
    """Random inputs in NumPy layout (seq, head, row, dim); masks per sequence, -inf where masked."""
    def mask(n):
        m = rng.normal(0, 1, (n_seq, 1, n_q, n)).astype(np.float16)
        m[rng.random(m.shape) < masked] = -np.inf
        return m
    c = {"q": rng.normal(0, 1, (n_seq, n_head, n_q, d)).astype(np.float32),
         "k": rng.normal(0, 1, (n_seq, n_head_kv, n_kv, d)), "v": rng.normal(0, 1, (n_seq, n_head_kv, n_kv, d)),
         "k2": rng.normal(0, 1, (n_seq, n_head_kv, n_kv2, d)).astype(tier_type),
         "v2": rng.normal(0, 1, (n_seq, n_head_kv, n_kv2, d)).astype(tier_type),
         "mask": mask(n_kv), "mask2": mask(n_kv2), "kind": kind, "sinks": rng.normal(0, 1, n_head).astype(np.float32)}
    c["kb"], c["vb"] = codec.quantize(c["k"], kind), codec.quantize(c["v"], kind)
    c["kd"], c["vd"] = codec.dequantize(c["kb"], kind, d), codec.dequantize(c["vb"], kind, d)
    return c


def fa_ggml(c, tier=True, scale=0.1, max_bias=0.0, softcap=0.0, sinks=False, threads=2) -> np.ndarray:
    from ggml_ops import F16, F32, Graph

    from oscar_gguf.kvtypes import kv_type

    n_seq, n_head, n_q, d = c["q"].shape
    _, hkv, n_kv, _ = c["k"].shape
    n_kv2 = c["k2"].shape[2]
    t2 = F16 if c["k2"].dtype == np.float16 else F32
    with Graph() as g:
        q = g.tensor(F32, c["q"], (d, n_q, n_head, n_seq))
        k = g.tensor(kv_type(c["kind"]).ggml_type, c["kb"], (d, n_kv, hkv, n_seq))
        v = g.tensor(kv_type(c["kind"]).ggml_type, c["vb"], (d, n_kv, hkv, n_seq))
        out = g.base.ggml_flash_attn_ext(g.ctx, q, k, v, g.tensor(F16, c["mask"], (n_kv, n_q, 1, n_seq)),
                                         scale, max_bias, softcap)
        if sinks:
            g.base.ggml_flash_attn_ext_add_sinks(out, g.tensor(F32, c["sinks"], (n_head,)))
        if tier:
            g.base.ggml_flash_attn_ext_add_tier(out, g.tensor(t2, c["k2"], (d, n_kv2, hkv, n_seq)),
                                                g.tensor(t2, c["v2"], (d, n_kv2, hkv, n_seq)),
                                                g.tensor(F16, c["mask2"], (n_kv2, n_q, 1, n_seq)))
        return g.compute(out, threads).reshape(n_seq, n_q, n_head, d)


def fa_numpy(c, scale=0.1, max_bias=0.0, softcap=0.0, sinks=False) -> np.ndarray:
    n_seq, n_head, n_q, d = c["q"].shape
    hkv = c["k"].shape[1]
    q2 = c["q"]  # the tier's K rows are widened to float32 and dotted with the float32 query
    n_head_log2 = 1 << int(np.floor(np.log2(n_head)))
    m0, m1 = 2.0 ** (-max_bias / n_head_log2), 2.0 ** (-(max_bias / 2) / n_head_log2)
    out = np.zeros((n_seq, n_q, n_head, d))
    for s in range(n_seq):
        for h in range(n_head):
            kh = h // (n_head // hkv)
            slope = (m0 ** (h + 1) if h < n_head_log2 else m1 ** (2 * (h - n_head_log2) + 1)) if max_bias > 0 else 1.0
            for i in range(n_q):
                l1 = c["kd"][s, kh].astype(np.float64) @ c["q"][s, h, i].astype(np.float64)
                l2 = c["k2"][s, kh].astype(np.float64) @ q2[s, h, i].astype(np.float64)
                logit = scale * np.concatenate([l1, l2])
                if softcap:
                    logit = softcap * np.tanh(logit / softcap)
                m = np.concatenate([c["mask"][s, 0, i], c["mask2"][s, 0, i]]).astype(np.float64)
                with np.errstate(invalid="ignore"):
                    logit = logit + slope * m
                vals = np.concatenate([c["vd"][s, kh], c["v2"][s, kh].astype(np.float32)]).astype(np.float64)
                live = np.isfinite(logit)
                sink = c["sinks"][h] if sinks else -np.inf
                top = max(logit[live].max() if live.any() else -np.inf, sink)
                if top == -np.inf:
                    continue
                w = np.where(live, np.exp(np.where(live, logit, 0) - top), 0.0)
                out[s, i, h] = (w @ vals) / (w.sum() + np.exp(sink - top))
    return out


@pytest.mark.parametrize("kind", ["oscar2", "oscar4"])
@pytest.mark.parametrize("tier_type", [np.float16, np.float32])
@pytest.mark.parametrize("opts", [{}, {"softcap": 2.0, "sinks": True}, {"max_bias": 8.0}])
def test_ggml_flash_attn_tier_matches_numpy(kind, tier_type, opts):
    """GQA 3, two sequences with their own masks, three queries, sinks, soft-capping and ALiBi slopes."""
    c = fa_case(np.random.default_rng(11), kind, tier_type)
    np.testing.assert_allclose(fa_ggml(c, **opts), fa_numpy(c, **opts), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("d", [64, 256])
def test_ggml_flash_attn_tier_head_sizes(d):
    c = fa_case(np.random.default_rng(d), "oscar3", np.float16, d=d, n_head=4, n_head_kv=4, n_seq=1, n_q=1)
    np.testing.assert_allclose(fa_ggml(c), fa_numpy(c), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("n_head,n_head_kv", [(6, 2), (4, 4), (8, 1)])
@pytest.mark.parametrize("opts", [{}, {"softcap": 2.0, "sinks": True}, {"max_bias": 8.0}])
def test_ggml_flash_attn_tier_decode(threads, n_head, n_head_kv, opts):
    """One query row (decode): the threads split the K/V rows of both sources and merge their parts."""
    c = fa_case(np.random.default_rng(threads * 7 + n_head), "oscar2", np.float16, n_head=n_head,
                n_head_kv=n_head_kv, n_q=1, n_kv=150, n_kv2=33)
    np.testing.assert_allclose(fa_ggml(c, threads=threads, **opts), fa_numpy(c, **opts), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("threads", [1, 3])
def test_ggml_flash_attn_tier_batch(threads):
    """A batch of 20 query rows: blocks of OSCAR_ATTN_QROWS rows (and a short last block) x the heads of a KV head."""
    c = fa_case(np.random.default_rng(threads), "oscar3", np.float16, n_head=8, n_head_kv=2, n_q=20, n_kv=77)
    np.testing.assert_allclose(fa_ggml(c, threads=threads, sinks=True), fa_numpy(c, sinks=True), rtol=1e-4, atol=2e-5)


def test_ggml_masked_tier_equals_plain_flash_attn():
    """A tier whose rows are all masked gives upstream's one-source result (same math, float rounding aside)."""
    c = fa_case(np.random.default_rng(5), "oscar3", np.float16)
    c["mask2"][:] = -np.inf
    np.testing.assert_allclose(fa_ggml(c, tier=True), fa_ggml(c, tier=False), rtol=1e-5, atol=1e-6)


def alibi(max_bias: float, h: int, n_head: int) -> float:
    """ggml's ALiBi slope of head h."""
    if max_bias <= 0:
        return 1.0
    n2 = 1 << int(np.floor(np.log2(n_head)))
    m0, m1 = 2.0 ** (-max_bias / n2), 2.0 ** (-(max_bias / 2.0) / n2)
    return m0 ** (h + 1) if h < n2 else m1 ** (2 * (h - n2) + 1)


@pytest.mark.parametrize("kind", ["oscar2", "oscar4"])
@pytest.mark.parametrize("g,max_bias", [(3, 0.0), (4, 8.0), (8, 0.0)])
def test_heads_of_a_kv_head_together(kind, g, max_bias):
    """g query heads over the same K/V rows (decoded once for all) give each head's own attention."""
    rng = np.random.default_rng(11 + g)
    _, main, tier = random_case(rng, kind, n_main=150, n_tier=40)
    q = rng.normal(0, 1, (g, DK))
    for h0, n_head in ((0, g), (g, 3 * g)):  # the group's first head, among n_head
        got = merge(attn_parts(q, [main, tier], 0.1, 0.0, max_bias, h0, n_head), sink=0.5)
        for j in range(g):
            want = reference(q[j], [main, tier], slope=alibi(max_bias, h0 + j, n_head), sink=0.5)
            np.testing.assert_allclose(got[j], want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cuts", [(1,), (75,), (150,), (37, 150, 160), (0, 0, 190)])
def test_parts_of_the_rows_merge_to_the_whole(cuts):
    """The rows cut into parts (a part may hold none, or span the two sources) merge to the whole's result."""
    rng = np.random.default_rng(5)
    _, main, tier = random_case(rng, "oscar3", n_main=150, n_tier=40)
    q = rng.normal(0, 1, (3, DK))
    whole = merge(attn_parts(q, [main, tier]), sink=-1.0)
    split = merge(attn_parts(q, [main, tier], cuts=cuts), sink=-1.0)
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)
    for j in range(3):
        np.testing.assert_allclose(whole[j], reference(q[j], [main, tier], sink=-1.0), rtol=2e-5, atol=2e-6)


def test_group_size():
    _, lib = _native.lib()
    assert lib.oscar_attn_group(9, 3, 3, 1, 1) == 3
    assert lib.oscar_attn_group(4, 1, 1, 1, 1) == 4
    assert lib.oscar_attn_group(9, 3, 3, 9, 1) == 1  # a mask per head
    assert lib.oscar_attn_group(8, 2, 4, 1, 1) == 1  # K and V with other heads


def test_query_rows_and_heads_together():
    """nq query rows (each with its own mask, as in a causal batch) x g heads over the same K/V rows."""
    rng = np.random.default_rng(21)
    nq, g = 5, 3
    _, main, tier = random_case(rng, "oscar2", n_main=70, n_tier=20)
    masks = {}
    for c in (main, tier):
        m = rng.normal(0, 1, (nq, c.n))
        m[rng.random(m.shape) < 0.4] = -np.inf
        m[1] = -np.inf  # a query row that sees nothing of this source
        masks[id(c)] = c.mask = m.astype(np.float16)
    q = rng.normal(0, 1, (nq, g, DK))
    got = merge(attn_parts(q, [main, tier], max_bias=8.0, h0=3, n_head=12, cuts=(33,)), sink=0.25)
    for i in range(nq):
        rows = [Source.__new__(Source) for _ in range(2)]
        for r, c in zip(rows, (main, tier)):
            r.__dict__.update(c.__dict__)
            r.mask = masks[id(c)][i]
        for j in range(g):
            want = reference(q[i, j], rows, slope=alibi(8.0, 3 + j, 12), sink=0.25)
            np.testing.assert_allclose(got[i * g + j], want, rtol=2e-5, atol=2e-6)
