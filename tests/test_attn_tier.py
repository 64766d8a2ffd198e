"""oscar_attn_part / oscar_attn_merge (native/oscar_attn.c), the CPU attention over the main OScaR cache and the f16
tier with one softmax, against NumPy on random and adversarial data: one query row, the query heads of a KV head
together (each with its ALiBi slope), and the rows split into parts; and the ggml op (patches/0005), whose result
must not depend on its schedule (threads, batch size, padding) by a single bit."""
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


def set_decoders(ffi, lib, s, kind) -> None:
    """A source's K and V decoders as ggml-cpu sets them: to_float, and the bits of the trellis types (decoded a tile
    at a time); float32 rows (kind None) have neither."""
    bits = int(kind[-1]) if kind else 0
    s.k_to_float = s.v_to_float = ffi.addressof(lib, f"oscar{bits}_dequantize_row") if bits else ffi.NULL
    s.k_bits = s.v_bits = bits if bits in (2, 3) else 0


def query(q: np.ndarray, scale=0.1, softcap=0.0, max_bias=0.0, h0=0, n_head=None):
    """An oscar_attn_query of the float32 queries q [nq, g, DK] (C order), and the buffer it points into (keep it)."""
    ffi, _ = _native.lib()
    qa, buf = ffi.new("oscar_attn_query *"), ffi.from_buffer("float[]", q)
    qa.q, qa.q_row, qa.q_head, qa.dk, qa.dv = buf, q.shape[-2] * DK, DK, DK, DV
    qa.scale, qa.softcap, qa.max_bias, qa.h0, qa.n_head, qa.g = scale, softcap, max_bias, h0, n_head, q.shape[-2]
    return qa, buf


def attn_parts(q: np.ndarray, sources: list[Source], scale=0.1, softcap=0.0, max_bias=0.0, h0=0, n_head=None,
               cuts=()) -> np.ndarray:
    """oscar_attn_part for one query row of g heads of one KV head, q [g, DK] (or [DK]), over the rows the sources'
    masks let it see (oscar_attn_visible), that list cut at the given points into several parts (as ggml-cpu cuts
    it into pieces): parts [len(cuts) + 1, g, 2 + DV]."""
    ffi, lib = _native.lib()
    q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
    g = q.shape[0]
    src, keep = ffi.new("oscar_attn_src[]", len(sources)), []  # buffers must outlive the calls
    for s, c in zip(src, sources):
        kb, vb = ffi.from_buffer("char[]", c.kb), ffi.from_buffer("char[]", c.vb)
        keep += [kb, vb]
        s.k, s.v, s.n, s.nbk, s.nbv = kb, vb, c.n, c.kb.strides[0] if c.n else 0, c.vb.strides[0] if c.n else 0
        s.mask = ffi.NULL if c.mask is None else ffi.cast("uint16_t *", ffi.from_buffer(c.mask))
        s.mask_row = c.n
        set_decoders(ffi, lib, s, c.kind)
    rows = ffi.new("int32_t[]", max(1, sum(c.n for c in sources)))
    n = lib.oscar_attn_visible(src, len(sources), 0, rows)
    bounds = [0, *(min(c, n) for c in cuts), n]
    parts = np.empty((len(bounds) - 1, g, 2 + DV), dtype=np.float32)
    scratch = np.empty(lib.oscar_attn_scratch(DK, DV, 1, g), dtype=np.float32)
    qa, _buf = query(q, scale, softcap, max_bias, h0, n_head or g)
    for pi, (r0, r1) in enumerate(zip(bounds[:-1], bounds[1:])):
        lib.oscar_attn_part(src, len(sources), rows + r0, r1 - r0, qa, 1, ffi.from_buffer("float[]", parts[pi]),
                            ffi.from_buffer("float[]", scratch))
    return parts


def merge(parts: np.ndarray, sink=None) -> np.ndarray:
    """oscar_attn_merge of each query row's parts: [g, DV]."""
    ffi, lib = _native.lib()
    out = np.empty((parts.shape[1], DV), dtype=np.float32)
    acc = ffi.new("float[]", 2 + DV)
    sk = ffi.NULL if sink is None else ffi.new("float *", sink)
    for j in range(parts.shape[1]):
        p = np.ascontiguousarray(parts[:, j])
        lib.oscar_attn_merge(ffi.from_buffer("float[]", p), len(p), 2 + DV, DV, sk, ffi.from_buffer("float[]", out[j]),
                             acc)
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


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_ggml_flash_attn_tier_many_pieces(threads):
    """Rows over several OSCAR_ATTN_CHUNK pieces in both sources, decode and a batch."""
    _, lib = _native.lib()
    n_kv, n_kv2 = 2 * lib.OSCAR_ATTN_CHUNK + 77, lib.OSCAR_ATTN_CHUNK + 3
    for n_q in (1, 11):
        c = fa_case(np.random.default_rng(n_q), "oscar2", np.float16, n_head=4, n_head_kv=2, n_q=n_q, n_kv=n_kv,
                    n_kv2=n_kv2)
        np.testing.assert_allclose(fa_ggml(c, threads=threads, sinks=True), fa_numpy(c, sinks=True), rtol=1e-4,
                                   atol=2e-5)


def rows_of(c: dict, i0: int, i1: int) -> dict:
    """The case with only query rows [i0, i1) (their masks with them)."""
    return {**c, "q": c["q"][:, :, i0:i1], "mask": c["mask"][:, :, i0:i1], "mask2": c["mask2"][:, :, i0:i1]}


def padded(c: dict, extra: int) -> dict:
    """The case with extra main-cache rows that no query sees (a cache padded past its used cells)."""
    d = dict(c)
    for key, kv in (("kb", "k"), ("vb", "v")):
        pad = codec.quantize(np.random.default_rng(extra).normal(0, 1, (*c[kv].shape[:2], extra, c[kv].shape[3])),
                             c["kind"])
        d[key] = np.concatenate([c[key], pad], axis=2)
        d[kv] = np.concatenate([c[kv], np.zeros((*c[kv].shape[:2], extra, c[kv].shape[3]))], axis=2)
    d["mask"] = np.concatenate([c["mask"], np.full((*c["mask"].shape[:3], extra), -np.inf, np.float16)], axis=3)
    return d


@pytest.mark.parametrize("n_head,n_head_kv", [(6, 2), (4, 4)])
@pytest.mark.parametrize("opts", [{"sinks": True}, {"softcap": 2.0, "max_bias": 8.0}])
def test_ggml_flash_attn_tier_same_bits_under_any_schedule(n_head, n_head_kv, opts):
    """Every query row gets the same float bits whatever the thread count, however the rows are batched (alone as
    a decode, in blocks starting anywhere) and however many masked rows pad the cache: restored states, server
    slots and prompts cut into other batches rely on it (a flipped bit changes the next layer's 2-bit codes)."""
    _, lib = _native.lib()
    c = fa_case(np.random.default_rng(n_head), "oscar2", np.float16, n_head=n_head, n_head_kv=n_head_kv, n_q=13,
                n_kv=lib.OSCAR_ATTN_CHUNK + 140, n_kv2=40)
    whole = fa_ggml(c, threads=2, **opts)
    for threads in (1, 3, 7):
        np.testing.assert_array_equal(fa_ggml(c, threads=threads, **opts), whole)
    for i0, i1 in ((0, 1), (5, 6), (12, 13), (3, 12), (1, 13)):
        np.testing.assert_array_equal(fa_ggml(rows_of(c, i0, i1), threads=3, **opts), whole[:, i0:i1])
    np.testing.assert_array_equal(fa_ggml(padded(c, 300), threads=2, **opts), whole)
    np.testing.assert_array_equal(fa_ggml(padded(rows_of(c, 7, 8), 300), threads=5, **opts), whole[:, 7:8])


@pytest.mark.parametrize("threads", [1, 3])
def test_ggml_flash_attn_tier_batch(threads):
    """A batch of 20 query rows, each with its own mask, x the heads of a KV head."""
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


@pytest.mark.parametrize("cuts", [(1,), (75,), (130,), (37, 100, 110), (0, 0, 190)])
def test_parts_of_the_rows_merge_to_the_whole(cuts):
    """The visible rows cut into parts (a part may hold none, or span the two sources) merge to the whole's result."""
    rng = np.random.default_rng(5)
    _, main, tier = random_case(rng, "oscar3", n_main=150, n_tier=40)
    q = rng.normal(0, 1, (3, DK))
    whole = merge(attn_parts(q, [main, tier]), sink=-1.0)
    split = merge(attn_parts(q, [main, tier], cuts=cuts), sink=-1.0)
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)
    for j in range(3):
        np.testing.assert_allclose(whole[j], reference(q[j], [main, tier], sink=-1.0), rtol=2e-5, atol=2e-6)


def test_masked_rows_change_no_bit():
    """Rows masked for the query, wherever they sit and however many, leave every bit of the result."""
    rng = np.random.default_rng(8)
    _, main, tier = random_case(rng, "oscar2", n_main=90, n_tier=30, masked=0.0)
    q = rng.normal(0, 1, (3, DK))
    whole = merge(attn_parts(q, [main, tier]), sink=0.5)
    pad = Source(rng.normal(0, 1, (200, DK)), rng.normal(0, 1, (200, DV)), np.full(200, -np.inf), "oscar2")
    at = rng.choice(np.arange(91), 200)  # masked rows dropped in between the main rows
    order = np.argsort(np.concatenate([np.arange(90) + 0.5, at]), kind="stable")
    mixed = Source.__new__(Source)
    mixed.kind, mixed.n = "oscar2", 290
    for key in ("kb", "vb", "k", "v", "mask"):
        setattr(mixed, key, np.ascontiguousarray(np.concatenate([getattr(main, key), getattr(pad, key)])[order]))
    np.testing.assert_array_equal(merge(attn_parts(q, [mixed, tier]), sink=0.5), whole)


def test_group_size():
    _, lib = _native.lib()
    assert lib.oscar_attn_group(9, 3, 3, 1, 1) == 3
    assert lib.oscar_attn_group(4, 1, 1, 1, 1) == 4
    assert lib.oscar_attn_group(9, 3, 3, 9, 1) == 1  # a mask per head
    assert lib.oscar_attn_group(8, 2, 4, 1, 1) == 1  # K and V with other heads


def attn_rows(q: np.ndarray, sources: list[Source], sinks: np.ndarray, max_bias=0.0) -> np.ndarray:
    """oscar_attn_rows for q [nq, g, DK], each source's mask [nq, n]: [nq, g, DV]."""
    ffi, lib = _native.lib()
    q = np.ascontiguousarray(q, dtype=np.float32)
    nq, g, total = q.shape[0], q.shape[1], sum(c.n for c in sources)
    src, keep = ffi.new("oscar_attn_src[]", len(sources)), []
    for s, c in zip(src, sources):
        kb, vb, m = ffi.from_buffer("char[]", c.kb), ffi.from_buffer("char[]", c.vb), ffi.from_buffer(c.mask)
        keep += [kb, vb, m]
        s.k, s.v, s.n, s.nbk, s.nbv = kb, vb, c.n, c.kb.strides[0], c.vb.strides[0]
        s.mask, s.mask_row = ffi.cast("uint16_t *", m), c.n
        set_decoders(ffi, lib, s, c.kind)
    qa, _buf = query(q, 0.1, 0.0, max_bias, 0, g)
    out = np.zeros((nq, g, DV), dtype=np.float32)
    work = np.empty(lib.oscar_attn_rows_work(DK, DV, nq, g, total), dtype=np.float32)
    sk = np.ascontiguousarray(sinks, dtype=np.float32)
    lib.oscar_attn_rows(src, len(sources), qa, nq, ffi.from_buffer("float[]", sk), ffi.from_buffer("float[]", out),
                        g * DV, DV, ffi.from_buffer("float[]", work))
    return out


@pytest.mark.parametrize("nq", [1, 5, 8])
def test_rows_together_give_each_row_alone(nq):
    """A causal block of query rows: the pieces they all see are done together, the rest row by row; each row's
    result has the bits of that row alone (cut into the same pieces), and NumPy's values."""
    _, lib = _native.lib()
    rng = np.random.default_rng(nq)
    chunk, g = lib.OSCAR_ATTN_CHUNK, 3
    n_main, n_tier = 2 * chunk + 190, 40
    main = Source(rng.normal(0, 1, (n_main, DK)), rng.normal(0, 1, (n_main, DV)), None, "oscar2")
    tier = Source(rng.normal(0, 1, (n_tier, DK)), rng.normal(0, 1, (n_tier, DV)), None, None)
    holes = rng.random(n_main) < 0.1  # rows nobody sees, among the shared past
    mm, mt = np.zeros((nq, n_main)), rng.normal(0, 1, (nq, n_tier))
    for i in range(nq):
        mm[i, holes] = -np.inf
        mm[i, 2 * chunk + 20 * i:] = -np.inf  # row i sees 20 more main rows than row i - 1
        mt[i, rng.random(n_tier) < 0.3] = -np.inf
    main.mask, tier.mask = mm.astype(np.float16), mt.astype(np.float16)
    q, sinks = rng.normal(0, 1, (nq, g, DK)), rng.normal(0, 1, g)
    got = attn_rows(q, [main, tier], sinks, max_bias=8.0)
    for i in range(nq):
        alone = [Source.__new__(Source) for _ in range(2)]
        for a, c in zip(alone, (main, tier)):
            a.__dict__.update(c.__dict__)
            a.mask = np.ascontiguousarray(c.mask[i])
        parts = attn_parts(q[i], alone, max_bias=8.0, cuts=(chunk, 2 * chunk))
        for j in range(g):
            want = merge(parts[:, j:j + 1], sink=sinks[j])[0]
            np.testing.assert_array_equal(got[i, j], want)
            np.testing.assert_allclose(got[i, j], reference(q[i, j], alone, slope=alibi(8.0, j, g), sink=sinks[j]),
                                       rtol=2e-5, atol=2e-6)
