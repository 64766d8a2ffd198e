// Attention over several K/V sources with one softmax: the CPU side of the two-tier cache (main OScaR cache + f16
// tier of protected tokens). Compiled into ggml-cpu (patches/0005 calls it for flash attention with a tier) and
// into the Python library (tests check it against NumPy).
//
// The query heads that share a KV head are done together, so each K and V row is decoded once for all of them.
// A query row's visible rows (mask not -inf) are listed first and go in tiles of OSCAR_ATTN_TILE of them, so the
// softmax's running maximum moves once per tile and its exponentials are taken eight at a time, and the arithmetic
// depends only on the visible rows in their order: not on masked rows between them, their count, or the schedule.
#include <math.h>

#include "oscar.h"
#include "oscar_impl.h"

#define OSCAR_ATTN_TILE 16

#if defined(OSCAR_X86) && defined(__AVX2__) && defined(__FMA__)

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// out[r] = the sum of a[r]'s 8 lanes, r < 8, by one fixed tree.
static inline void sums8(const __m256 * a, float * out) {
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31)));
}

// out[r] = K row r . q for 8 rows (dk floats apart): one 8-lane accumulator per row, in the order of d, then sums8.
static inline void logits8(const float * k, const float * q, int64_t dk, float * out) {
    __m256 a[8];
    for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= dk; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        for (int r = 0; r < 8; r++) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(k + r * dk + d), qv, a[r]);
    }
    sums8(a, out);
    for (; d < dk; d++) {
        for (int r = 0; r < 8; r++) out[r] += k[r * dk + d] * q[d];
    }
}

// o = f o + sum_r w[r] V row r over nt rows (dv floats apart), rows of weight 0 skipped, in row order; o is held
// in registers 32 floats at a time.
static inline void accumulate(float * o, float f, const float * v, const float * w, int nt, int64_t dv) {
    const __m256 vf = _mm256_set1_ps(f);
    int64_t d = 0;
    for (; d + 32 <= dv; d += 32) {
        __m256 a0 = _mm256_mul_ps(vf, _mm256_loadu_ps(o + d)),      a1 = _mm256_mul_ps(vf, _mm256_loadu_ps(o + d + 8));
        __m256 a2 = _mm256_mul_ps(vf, _mm256_loadu_ps(o + d + 16)), a3 = _mm256_mul_ps(vf, _mm256_loadu_ps(o + d + 24));
        for (int r = 0; r < nt; r++) {
            if (w[r] == 0.0f) continue;
            const __m256 wr = _mm256_set1_ps(w[r]);
            const float * x = v + r * dv + d;
            a0 = _mm256_fmadd_ps(wr, _mm256_loadu_ps(x), a0);
            a1 = _mm256_fmadd_ps(wr, _mm256_loadu_ps(x + 8), a1);
            a2 = _mm256_fmadd_ps(wr, _mm256_loadu_ps(x + 16), a2);
            a3 = _mm256_fmadd_ps(wr, _mm256_loadu_ps(x + 24), a3);
        }
        _mm256_storeu_ps(o + d, a0);
        _mm256_storeu_ps(o + d + 8, a1);
        _mm256_storeu_ps(o + d + 16, a2);
        _mm256_storeu_ps(o + d + 24, a3);
    }
    for (; d + 8 <= dv; d += 8) {
        __m256 a0 = _mm256_mul_ps(vf, _mm256_loadu_ps(o + d));
        for (int r = 0; r < nt; r++) {
            if (w[r] != 0.0f) a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[r]), _mm256_loadu_ps(v + r * dv + d), a0);
        }
        _mm256_storeu_ps(o + d, a0);
    }
    for (; d < dv; d++) {
        float a = f * o[d];
        for (int r = 0; r < nt; r++) {
            if (w[r] != 0.0f) a = fmaf(w[r], v[r * dv + d], a);
        }
        o[d] = a;
    }
}

// The largest of a tile's logits (NaN never wins; all -inf or NaN: -inf).
static inline float max_tile(const float * s) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (int r = 0; r < OSCAR_ATTN_TILE; r += 8) m = _mm256_max_ps(_mm256_loadu_ps(s + r), m);  // NaN: keeps m
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// y = f y + w x (the fold of parts)
static inline void scale_add(float * y, float f, const float * x, float w, int64_t n) {
    const __m256 vf = _mm256_set1_ps(f), vw = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + i), _mm256_mul_ps(vf, _mm256_loadu_ps(y + i))));
    }
    for (; i < n; i++) y[i] = f * y[i] + w * x[i];
}

// e^x for 8 lanes: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to r^7 (relative error < 1e-7 there,
// about float rounding), 2^n through the exponent bits; below -87.3 (and -inf) the result is 0.
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    const __m256 dead = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  // ln 2 in two parts
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // 2^n as two factors, so that n down to -126 and up to 127 stays a normal float
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i h  = _mm256_srai_epi32(ni, 1);
    const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h),
                                                                             _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(dead, _mm256_mul_ps(_mm256_mul_ps(p, f1), f2));
}

// w[i] = e^(s[i] - m) for a tile (-inf: 0); returns their sum.
static inline float exp_tile(const float * s, float m, float * w, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), _mm256_set1_ps(m)));
        _mm256_storeu_ps(w + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum(acc);
    for (; i < n; i++) sum += (w[i] = expf(s[i] - m));
    return sum;
}

#else

static inline void logits8(const float * k, const float * q, int64_t dk, float * out) {
    for (int r = 0; r < 8; r++) {
        float a = 0.0f;
        for (int64_t d = 0; d < dk; d++) a += k[r * dk + d] * q[d];
        out[r] = a;
    }
}

static inline void accumulate(float * o, float f, const float * v, const float * w, int nt, int64_t dv) {
    for (int64_t d = 0; d < dv; d++) {
        float a = f * o[d];
        for (int r = 0; r < nt; r++) {
            if (w[r] != 0.0f) a += w[r] * v[r * dv + d];
        }
        o[d] = a;
    }
}

static inline float max_tile(const float * s) {
    float m = -INFINITY;
    for (int r = 0; r < OSCAR_ATTN_TILE; r++) m = s[r] > m ? s[r] : m;
    return m;
}

static inline void scale_add(float * y, float f, const float * x, float w, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = f * y[i] + w * x[i];
}

static inline float exp_tile(const float * s, float m, float * w, int n) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += (w[i] = expf(s[i] - m));
    return sum;
}

#endif

#if defined(OSCAR_X86) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__AVX512VBMI__) && defined(__FMA__) && defined(__F16C__) &&               \
    !defined(OSCAR_NO_AVX512)
// Compiled for AVX-512 with VBMI: a tile whose rows all come from one oscar2/oscar3 source, for up to
// OSCAR_ATTN_FUSED queries, is decoded into registers (oscar_tcq_vbmi.h) and used there (fused_logits,
// fused_accumulate) instead of through kt and vt: the same operations in the same order, so the same bits either way
// (16-lane logit sums, an earlier version, moved Gemma 3's KLD by +9 % at 8 chunks: docs/cpu-vbmi-kld).
#include "oscar_tcq_vbmi.h"
#define OSCAR_ATTN_FUSED 4

static oscar_vbmi_tables attn_vbmi[2];  // [bits - 2]

__attribute__((constructor)) static void attn_vbmi_init(void) {
    for (int s = 2; s <= 3; s++) oscar_vbmi_tables_init(&attn_vbmi[s - 2], s, oscar_tcq_codebook(s));
}

// logits8 of nu queries qs[u] over the tile's nt rows (rows tr of source a, oscar2/oscar3 K), decoded into
// registers: out[u 16 + r] (rows nt.. : 0, as kt's zero rows give). The same 8-lane sums in the order of d and the
// same tree (sums8), so the same bits as logits8 over kt.
static inline __attribute__((always_inline)) void fused_logits(const oscar_attn_src * a, const int64_t * tr, int nt,
                                                               const float * const * qs, int nu, int64_t dk,
                                                               float * out) {
    const oscar_vbmi_regs t      = oscar_vbmi_load(&attn_vbmi[a->k_bits - 2], a->k_bits);
    const size_t          nbytes = oscar_block_bytes_inline(a->k_bits);
    __m256 acc[OSCAR_ATTN_FUSED][OSCAR_ATTN_TILE];
    for (int u = 0; u < nu; u++) {
        for (int r = 0; r < OSCAR_ATTN_TILE; r++) acc[u][r] = _mm256_setzero_ps();
    }
    for (int r = 0; r < nt; r++) {
        const uint8_t * row = (const uint8_t *) a->k + tr[r] * (int64_t) a->nbk;
        for (int64_t b = 0; b < dk / OSCAR_QK; b++) {
            __m512 x[4];
            oscar_vbmi_block(&t, row + b * nbytes, x);
            for (int u = 0; u < nu; u++) {
                const float * qb = qs[u] + b * OSCAR_QK;
                for (int c = 0; c < 4; c++) {
                    acc[u][r] = _mm256_fmadd_ps(_mm512_castps512_ps256(x[c]), _mm256_loadu_ps(qb + 16 * c), acc[u][r]);
                    acc[u][r] = _mm256_fmadd_ps(_mm512_extractf32x8_ps(x[c], 1), _mm256_loadu_ps(qb + 16 * c + 8), acc[u][r]);
                }
            }
        }
    }
    for (int u = 0; u < nu; u++) {
        for (int r = 0; r < OSCAR_ATTN_TILE; r += 8) sums8(acc[u] + r, out + u * OSCAR_ATTN_TILE + r);
    }
}

// accumulate (o[u] = f[u] o[u] + sum_r w[u 16 + r] V row r, rows of weight 0 skipped) for the nu queries with
// active[u], the tile's V rows (rows tr of source a, oscar2/oscar3) decoded into registers a block at a time.
static inline __attribute__((always_inline)) void fused_accumulate(const oscar_attn_src * a, const int64_t * tr, int nt,
                                                                   float * const * o, const float * f, const float * w,
                                                                   const int * active, int nu, int64_t dv) {
    const oscar_vbmi_regs t      = oscar_vbmi_load(&attn_vbmi[a->v_bits - 2], a->v_bits);
    const size_t          nbytes = oscar_block_bytes_inline(a->v_bits);
    for (int64_t b = 0; b < dv / OSCAR_QK; b++) {
        __m512 acc[OSCAR_ATTN_FUSED][4];
        for (int u = 0; u < nu; u++) {
            const __m512 fu = _mm512_set1_ps(f[u]);
            for (int c = 0; c < 4; c++) {
                acc[u][c] = active[u] ? _mm512_mul_ps(fu, _mm512_loadu_ps(o[u] + b * OSCAR_QK + 16 * c)) : _mm512_setzero_ps();
            }
        }
        for (int r = 0; r < nt; r++) {
            __m512 x[4];
            oscar_vbmi_block(&t, (const uint8_t *) a->v + tr[r] * (int64_t) a->nbv + b * nbytes, x);
            for (int u = 0; u < nu; u++) {
                const float wr = w[u * OSCAR_ATTN_TILE + r];
                if (!active[u] || wr == 0.0f) continue;
                for (int c = 0; c < 4; c++) acc[u][c] = _mm512_fmadd_ps(_mm512_set1_ps(wr), x[c], acc[u][c]);
            }
        }
        for (int u = 0; u < nu; u++) {
            if (!active[u]) continue;
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(o[u] + b * OSCAR_QK + 16 * c, acc[u][c]);
        }
    }
}

// The fused steps for a constant number of queries (registers, not memory, for the accumulators).
static void fused_logits_n(const oscar_attn_src * a, const int64_t * tr, int nt, const float * const * qs, int nu,
                           int64_t dk, float * out) {
    switch (nu) {
        case 1: fused_logits(a, tr, nt, qs, 1, dk, out); break;
        case 2: fused_logits(a, tr, nt, qs, 2, dk, out); break;
        case 3: fused_logits(a, tr, nt, qs, 3, dk, out); break;
        default: fused_logits(a, tr, nt, qs, 4, dk, out); break;
    }
}

static void fused_accumulate_n(const oscar_attn_src * a, const int64_t * tr, int nt, float * const * o, const float * f,
                               const float * w, const int * active, int nu, int64_t dv) {
    switch (nu) {
        case 1: fused_accumulate(a, tr, nt, o, f, w, active, 1, dv); break;
        case 2: fused_accumulate(a, tr, nt, o, f, w, active, 2, dv); break;
        case 3: fused_accumulate(a, tr, nt, o, f, w, active, 3, dv); break;
        default: fused_accumulate(a, tr, nt, o, f, w, active, 4, dv); break;
    }
}
#endif

int oscar_attn_group(int64_t n_head, int64_t n_head_k, int64_t n_head_v, int64_t mask_heads, int64_t mask2_heads) {
    const int shared = n_head_k == n_head_v && n_head_k > 0 && n_head % n_head_k == 0 && mask_heads == 1 &&
                       mask2_heads == 1;
    return shared ? (int) (n_head / n_head_k) : 1;
}

int64_t oscar_attn_chunks(int64_t n) {
    return (n + OSCAR_ATTN_CHUNK - 1) / OSCAR_ATTN_CHUNK;
}

static size_t lines(size_t n) { return (n + 15) / 16 * 16; }  // floats, in whole cache lines

size_t oscar_attn_scratch(int64_t dk, int64_t dv, int nq, int g) {  // K and V tiles, logits, weights, slopes
    return lines((size_t) (OSCAR_ATTN_TILE * (dk + dv) + 2 * nq * g * OSCAR_ATTN_TILE + g));
}

size_t oscar_attn_rows_work(int64_t dk, int64_t dv, int nq, int g, int64_t rows) {  // sums, a part, row lists
    return lines((size_t) (2 * nq * g * (2 + dv))) + oscar_attn_scratch(dk, dv, nq, g) + lines((size_t) (nq * rows));
}

size_t oscar_attn_decode_work(int64_t dk, int64_t dv, int g, int64_t rows) {  // scratch, row list
    return oscar_attn_scratch(dk, dv, 1, g) + lines((size_t) rows);
}

size_t oscar_attn_wsize(int64_t dk, int64_t dv, int64_t heads, int decode, int g, int nth, int64_t rows) {
    if (decode) {  // every head's part of every piece, then each thread's oscar_attn_decode_work
        return (size_t) (heads * oscar_attn_chunks(rows) * (2 + dv)) +
               (size_t) nth * oscar_attn_decode_work(dk, dv, g, rows);
    }
    return (size_t) nth * oscar_attn_rows_work(dk, dv, OSCAR_ATTN_QROWS, g, rows);
}

int64_t oscar_attn_visible(const oscar_attn_src * src, int nsrc, int64_t i, int32_t * rows) {
    int64_t n = 0, off = 0;
    for (int t = 0; t < nsrc; off += src[t].n, t++) {
        const uint16_t * m = src[t].mask ? src[t].mask + i * src[t].mask_row : NULL;
        for (int64_t r = 0; r < src[t].n; r++) {
            if (!m || m[r] != 0xfc00) {  // fp16 -inf
                rows[n++] = (int32_t) (off + r);
            }
        }
    }
    return n;
}

// Row x of the sources' rows taken in order: its source, and its row there.
static inline const oscar_attn_src * locate(const oscar_attn_src * src, int nsrc, int64_t x, int64_t * row) {
    int t = 0;
    for (; t + 1 < nsrc && x >= src[t].n; t++) x -= src[t].n;
    *row = x;
    return &src[t];
}

// Rows rows[0..n-1] of a source's K or V (stride bytes apart from base) as floats, len a row: oscar2 / oscar3 rows a
// run at a time, others row by row (NULL to_float: float32 rows).
static void decode_rows(const char * base, size_t stride, int bits, oscar_to_float_fn to_float, const int64_t * rows,
                        int n, int64_t len, float * out) {
    if (bits) {
        oscar_tcq_rows_to_float(bits, base, stride, rows, n, len, out);
        return;
    }
    for (int r = 0; r < n; r++) {
        if (to_float) {
            to_float(base + rows[r] * (int64_t) stride, out + r * len, len);
        } else {
            memcpy(out + r * len, base + rows[r] * (int64_t) stride, (size_t) len * sizeof(float));
        }
    }
}

void oscar_attn_part(const oscar_attn_src * src, int nsrc, const int32_t * rows, int64_t n,
                     const oscar_attn_query * qa, int nq, float * part, float * scratch) {
    const int g = qa->g, nqg = nq * g;  // query (i, j): logits s[(i g + j) TILE + r], part (i g + j)
    const int64_t dk = qa->dk, dv = qa->dv, q_row = qa->q_row, q_head = qa->q_head;  // locals: no aliasing reloads
    const float * q = qa->q;
    const float softcap = qa->softcap;
    float * kt = scratch, * vt = kt + OSCAR_ATTN_TILE * dk, * s = vt + OSCAR_ATTN_TILE * dv;
    float * w = s + nqg * OSCAR_ATTN_TILE, * slope = w + nqg * OSCAR_ATTN_TILE;
    const float kq_scale = softcap != 0.0f ? qa->scale / softcap : qa->scale;
    const uint32_t n_head_log2 = 1u << (uint32_t) floor(log2((double) qa->n_head));  // ALiBi, as ggml does it
    const float m0 = powf(2.0f, -qa->max_bias / n_head_log2), m1 = powf(2.0f, -(qa->max_bias / 2.0f) / n_head_log2);
    for (int j = 0; j < g; j++) {
        const int64_t h = qa->h0 + j;
        slope[j] = qa->max_bias > 0.0f ? (h < n_head_log2 ? powf(m0, h + 1) : powf(m1, 2 * (h - n_head_log2) + 1))
                                       : 1.0f;
    }
    for (int u = 0; u < nqg; u++) {
        float * p = part + u * (2 + dv);
        p[0] = -INFINITY;
        p[1] = 0.0f;
        memset(p + 2, 0, (size_t) dv * sizeof(float));
    }
    for (int64_t i0 = 0; i0 < n; i0 += OSCAR_ATTN_TILE) {
        const int nt = (int) (n - i0 < OSCAR_ATTN_TILE ? n - i0 : OSCAR_ATTN_TILE);
        const oscar_attn_src * ta[OSCAR_ATTN_TILE];  // the tile's rows: source, and row there
        int64_t tr[OSCAR_ATTN_TILE];
        int one = 1;  // all from one source
        for (int r = 0; r < nt; r++) {
            ta[r] = locate(src, nsrc, rows[i0 + r], &tr[r]);
            one = one && ta[r] == ta[0];
        }
#ifdef OSCAR_ATTN_FUSED
        const int fused = one && ta[0]->k_bits && ta[0]->v_bits && dk % OSCAR_QK == 0 && dv % OSCAR_QK == 0 &&
                          nqg <= OSCAR_ATTN_FUSED;
        const float * qs[OSCAR_ATTN_FUSED];
        for (int u = 0; fused && u < nqg; u++) qs[u] = q + (u / g) * q_row + (u % g) * q_head;
        if (fused) fused_logits_n(ta[0], tr, nt, qs, nqg, dk, s);
#else
        const int fused = 0;
        (void) one;
#endif
        for (int r0 = 0, r1; !fused && r0 < nt; r0 = r1) {  // the tile's K and V rows, decoded once for all queries
            const oscar_attn_src * a = ta[r0];
            for (r1 = r0 + 1; r1 < nt && ta[r1] == a; r1++) {}
            decode_rows(a->k, a->nbk, a->k_bits, a->k_to_float, tr + r0, r1 - r0, dk, kt + r0 * dk);
            decode_rows(a->v, a->nbv, a->v_bits, a->v_to_float, tr + r0, r1 - r0, dv, vt + r0 * dv);
        }
        if (!fused && nt < OSCAR_ATTN_TILE) {  // a short tile: zero rows, whose logits become -inf below
            memset(kt + nt * dk, 0, (size_t) ((OSCAR_ATTN_TILE - nt) * dk) * sizeof(float));
        }
        for (int i = 0; i < nq; i++) {
            float mv[OSCAR_ATTN_TILE];  // query row i's mask values of the tile's rows
            for (int r = 0; r < nt; r++) {
                mv[r] = ta[r]->mask ? oscar_half_to_float(ta[r]->mask[i * ta[r]->mask_row + tr[r]]) : 0.0f;
            }
            for (int j = 0; j < g; j++) {
                float * su = s + (i * g + j) * OSCAR_ATTN_TILE;
                const float * qij = q + i * q_row + j * q_head;
                const float sl = slope[j];
                for (int r = 0; !fused && r < OSCAR_ATTN_TILE; r += 8) logits8(kt + r * dk, qij, dk, su + r);
                for (int r = 0; r < nt; r++) {  // (a loop over the whole tile, vectorized, made batches 12 % slower)
                    float l = su[r] * kq_scale;
                    if (softcap != 0.0f) {
                        l = softcap * tanhf(l);
                    }
                    su[r] = l + (mv[r] != 0.0f ? sl * mv[r] : 0.0f);
                }
                for (int r = nt; r < OSCAR_ATTN_TILE; r++) su[r] = -INFINITY;  // weights 0
            }
        }
#ifdef OSCAR_ATTN_FUSED
        float fu[OSCAR_ATTN_FUSED] = { 0 };  // a fused tile's rescales, and which queries see it
        int   active[OSCAR_ATTN_FUSED] = { 0 };
#endif
        for (int u = 0; u < nqg; u++) {  // the running maximum moves once per tile
            float * p = part + u * (2 + dv), * su = s + u * OSCAR_ATTN_TILE, * wu = w + u * OSCAR_ATTN_TILE;
            const float m = max_tile(su);
            if (m == -INFINITY) {  // a logit of -inf (an infinite query): no weight
                continue;
            }
            float f = 1.0f;
            if (m > p[0]) {
                f = expf(p[0] - m);  // 0 the first time
                p[1] *= f;
                p[0] = m;
            }
            p[1] += exp_tile(su, p[0], wu, OSCAR_ATTN_TILE);
            if (!fused) {
                accumulate(p + 2, f, vt, wu, nt, dv);
#ifdef OSCAR_ATTN_FUSED
            } else {
                fu[u]     = f;
                active[u] = 1;
#endif
            }
        }
#ifdef OSCAR_ATTN_FUSED
        if (fused) {
            float * o[OSCAR_ATTN_FUSED];
            for (int u = 0; u < nqg; u++) o[u] = part + u * (2 + dv) + 2;
            fused_accumulate_n(ta[0], tr, nt, o, fu, w, active, nqg, dv);
        }
#endif
    }
}

void oscar_attn_begin(float * acc, int64_t dv, const float * sink) {
    acc[0] = sink ? *sink : -INFINITY;  // the sink: one more logit, with a zero value vector
    acc[1] = sink ? 1.0f : 0.0f;
    memset(acc + 2, 0, (size_t) dv * sizeof(float));
}

void oscar_attn_fold(float * acc, const float * part, int64_t dv) {
    if (part[0] == -INFINITY) {  // nothing seen in the part
        return;
    }
    const float m = part[0] > acc[0] ? part[0] : acc[0];
    const float fa = expf(acc[0] - m), fp = expf(part[0] - m);  // acc[0] = -inf: fa = 0
    acc[0] = m;
    acc[1] = acc[1] * fa + part[1] * fp;
    scale_add(acc + 2, fa, part + 2, fp, dv);
}

void oscar_attn_end(const float * acc, int64_t dv, float * out) {
    const float inv = acc[0] == -INFINITY || acc[1] == 0.0f ? 0.0f : 1.0f / acc[1];  // nothing seen, no sink: 0
    for (int64_t d = 0; d < dv; d++) out[d] = inv * acc[2 + d];
}

void oscar_attn_merge(const float * parts, int nparts, int64_t part_stride, int64_t dv, const float * sink,
                      float * out, float * acc) {
    oscar_attn_begin(acc, dv, sink);
    for (int c = 0; c < nparts; c++) oscar_attn_fold(acc, parts + c * part_stride, dv);
    oscar_attn_end(acc, dv, out);
}

void oscar_attn_rows(const oscar_attn_src * src, int nsrc, const oscar_attn_query * qa, int nq, const float * sink,
                     float * out, int64_t out_row, int64_t out_head, float * work) {
    const int g = qa->g, nqg = nq * g;
    const int64_t dv = qa->dv, P = 2 + dv, total = src[0].n + (nsrc > 1 ? src[1].n : 0);
    float * acc = work, * piece = acc + nqg * P;
    float * scratch = acc + lines((size_t) (2 * nqg * P));
    int32_t * lists = (int32_t *) (scratch + oscar_attn_scratch(qa->dk, dv, nq, g));
    int64_t n[OSCAR_ATTN_QROWS], common = total;
    for (int i = 0; i < nq; i++) {  // each row's visible rows, and how many they share from the start
        int32_t * li = lists + i * total;
        n[i] = oscar_attn_visible(src, nsrc, i, li);
        int64_t c = 0;
        while (c < common && c < n[i] && (i == 0 || li[c] == lists[c])) c++;
        common = c;
        for (int j = 0; j < g; j++) oscar_attn_begin(acc + (i * g + j) * P, dv, sink ? sink + j : NULL);
    }
    const int64_t joint = common / OSCAR_ATTN_CHUNK;  // whole pieces every row has alike: done together
    for (int64_t c = 0; c < joint; c++) {
        oscar_attn_part(src, nsrc, lists + c * OSCAR_ATTN_CHUNK, OSCAR_ATTN_CHUNK, qa, nq, piece, scratch);
        for (int u = 0; u < nqg; u++) oscar_attn_fold(acc + u * P, piece + u * P, dv);
    }
    for (int i = 0; i < nq; i++) {  // the rest row by row
        oscar_attn_query qi = *qa;
        qi.q = qa->q + i * qa->q_row;
        oscar_attn_src si[2];
        for (int t = 0; t < nsrc && t < 2; t++) {
            si[t] = src[t];
            si[t].mask = src[t].mask ? src[t].mask + i * src[t].mask_row : NULL;
        }
        const int32_t * li = lists + i * total;
        for (int64_t c = joint; c < oscar_attn_chunks(n[i]); c++) {
            const int64_t len = n[i] - c * OSCAR_ATTN_CHUNK < OSCAR_ATTN_CHUNK ? n[i] - c * OSCAR_ATTN_CHUNK
                                                                               : OSCAR_ATTN_CHUNK;
            oscar_attn_part(si, nsrc, li + c * OSCAR_ATTN_CHUNK, len, &qi, 1, piece, scratch);
            for (int j = 0; j < g; j++) oscar_attn_fold(acc + (i * g + j) * P, piece + j * P, dv);
        }
        for (int j = 0; j < g; j++) oscar_attn_end(acc + (i * g + j) * P, dv, out + i * out_row + j * out_head);
    }
}
