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

static inline float dot(const float * a, const float * b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void scale_add(float * y, float f, const float * x, float w, int64_t n) {  // y = f y + w x
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

static inline float dot(const float * a, const float * b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
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

int oscar_attn_group(int64_t n_head, int64_t n_head_k, int64_t n_head_v, int64_t mask_heads, int64_t mask2_heads) {
    const int shared = n_head_k == n_head_v && n_head_k > 0 && n_head % n_head_k == 0 && mask_heads == 1 &&
                       mask2_heads == 1;
    return shared ? (int) (n_head / n_head_k) : 1;
}

size_t oscar_attn_scratch(int64_t dk, int64_t dv, int g) {  // K row, V row, logits, weights, slopes
    return ((size_t) (dk + dv + 2 * g * OSCAR_ATTN_TILE + g) + 15) / 16 * 16;  // whole cache lines
}

int64_t oscar_attn_chunks(int64_t n) {
    return (n + OSCAR_ATTN_CHUNK - 1) / OSCAR_ATTN_CHUNK;
}

size_t oscar_attn_wsize(int64_t dk, int64_t dv, int64_t heads, int decode, int g, int nth, int64_t rows) {
    const size_t mine = oscar_attn_scratch(dk, dv, g) + ((size_t) rows + 15) / 16 * 16;  // scratch, row list
    if (decode) {  // every head's part of every chunk, then the threads' own
        return (size_t) (heads * oscar_attn_chunks(rows) * (2 + dv)) + (size_t) nth * mine;
    }
    return (size_t) nth * ((size_t) (2 * g * (2 + dv)) + mine);  // the group's sums and one part
}

int64_t oscar_attn_visible(const oscar_attn_src * src, int nsrc, int32_t * rows) {
    int64_t n = 0, off = 0;
    for (int t = 0; t < nsrc; off += src[t].n, t++) {
        const uint16_t * m = src[t].mask;
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

void oscar_attn_part(const oscar_attn_src * src, int nsrc, const int32_t * rows, int64_t n, int g, const float * q,
                     int64_t q_head, int64_t dk, int64_t dv, float scale, float softcap, float max_bias, int64_t h0,
                     int64_t n_head, float * part, float * scratch) {
    float * krow = scratch, * vrow = krow + dk, * s = vrow + dv, * w = s + g * OSCAR_ATTN_TILE;
    float * slope = w + g * OSCAR_ATTN_TILE;  // logits of head h0 + j at s[j TILE + r]
    const float kq_scale = softcap != 0.0f ? scale / softcap : scale;
    const uint32_t n_head_log2 = 1u << (uint32_t) floor(log2((double) n_head));  // ALiBi, as ggml does it
    const float m0 = powf(2.0f, -max_bias / n_head_log2), m1 = powf(2.0f, -(max_bias / 2.0f) / n_head_log2);
    for (int j = 0; j < g; j++) {
        const int64_t h = h0 + j;
        slope[j] = max_bias > 0.0f ? (h < n_head_log2 ? powf(m0, h + 1) : powf(m1, 2 * (h - n_head_log2) + 1)) : 1.0f;
        float * p = part + j * (2 + dv);
        p[0] = -INFINITY;
        p[1] = 0.0f;
        memset(p + 2, 0, (size_t) dv * sizeof(float));
    }
    for (int64_t i0 = 0; i0 < n; i0 += OSCAR_ATTN_TILE) {
        const int nt = (int) (n - i0 < OSCAR_ATTN_TILE ? n - i0 : OSCAR_ATTN_TILE);
        for (int r = 0; r < nt; r++) {  // the tile's logits, one K row decode for all heads
            int64_t row;
            const oscar_attn_src * a = locate(src, nsrc, rows[i0 + r], &row);
            const float mv = a->mask ? oscar_half_to_float(a->mask[row]) : 0.0f;
            const float * k = (const float *) (a->k + row * a->nbk);
            if (a->k_to_float) {
                a->k_to_float(a->k + row * a->nbk, krow, dk);
                k = krow;
            }
            for (int j = 0; j < g; j++) {
                float l = dot(k, q + j * q_head, dk) * kq_scale;
                if (softcap != 0.0f) {
                    l = softcap * tanhf(l);
                }
                s[j * OSCAR_ATTN_TILE + r] = l + (mv != 0.0f ? slope[j] * mv : 0.0f);
            }
        }
        for (int j = 0; j < g; j++) {  // the running maximum moves once per tile
            float * p = part + j * (2 + dv), * sj = s + j * OSCAR_ATTN_TILE;
            for (int r = nt; r < OSCAR_ATTN_TILE; r++) sj[r] = -INFINITY;  // a short tile: weights 0
            float m = -INFINITY;
            for (int r = 0; r < OSCAR_ATTN_TILE; r++) m = sj[r] > m ? sj[r] : m;
            if (m == -INFINITY) {  // a logit of -inf (an infinite query): no weight
                memset(w + j * OSCAR_ATTN_TILE, 0, OSCAR_ATTN_TILE * sizeof(float));
                continue;
            }
            if (m > p[0]) {
                const float f = expf(p[0] - m);  // 0 the first time
                for (int64_t d = 0; d < dv; d++) p[2 + d] *= f;
                p[1] *= f;
                p[0] = m;
            }
            p[1] += exp_tile(sj, p[0], w + j * OSCAR_ATTN_TILE, OSCAR_ATTN_TILE);
        }
        for (int r = 0; r < nt; r++) {  // one V row decode for all heads
            int64_t row;
            const oscar_attn_src * a = locate(src, nsrc, rows[i0 + r], &row);
            const float * v = (const float *) (a->v + row * a->nbv);
            if (a->v_to_float) {
                a->v_to_float(a->v + row * a->nbv, vrow, dv);
                v = vrow;
            }
            for (int j = 0; j < g; j++) {
                const float wr = w[j * OSCAR_ATTN_TILE + r];
                if (wr != 0.0f) {
                    scale_add(part + j * (2 + dv) + 2, 1.0f, v, wr, dv);
                }
            }
        }
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
