// oscar2, the bitshift-trellis 2-bit code (format and encoder in oscar_tcq_block.h): rows of 64-element blocks. On
// x86 (chosen at run time) the Viterbi pass keeps 16 survivors to a vector with AVX-512, 8 with AVX2; their costs are
// the same integers and their tie rules the same, so every path writes the same bytes as the scalar pass
// (tests/test_tcq_c.py compares the builds).
#include "oscar.h"
#include "oscar_impl.h"
#include "oscar_tcq_block.h"
#include "oscar_tcq_codebook.h"

static const float oscar_tcq_cb[OSCAR_TCQ_STATES] = { OSCAR_TCQ_CODEBOOK };

const float * oscar_tcq_codebook(void) { return oscar_tcq_cb; }

#ifdef OSCAR_X86
// G[c][h] = best[4m + c] for m = 8h .. 8h + 7, from B[i] = best[8i .. 8i + 7]: the old costs each group of 8
// outputs k reads (k % 16 = m). Pairs (best[8i + c], best[8i + 4 + c]) as 64-bit lanes, then a 4 x 4 transpose.
OSCAR_AVX2 static inline void tcq_preds_avx2(const __m256i * B, __m256i G[4][2]) {
    const __m256i pair = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256d p[4];
        for (int i = 0; i < 4; i++) p[i] = _mm256_castsi256_pd(_mm256_permutevar8x32_epi32(B[4 * h + i], pair));
        const __m256d q0 = _mm256_unpacklo_pd(p[0], p[1]), q1 = _mm256_unpackhi_pd(p[0], p[1]);
        const __m256d q2 = _mm256_unpacklo_pd(p[2], p[3]), q3 = _mm256_unpackhi_pd(p[2], p[3]);
        G[0][h] = _mm256_castpd_si256(_mm256_permute2f128_pd(q0, q2, 0x20));
        G[1][h] = _mm256_castpd_si256(_mm256_permute2f128_pd(q1, q3, 0x20));
        G[2][h] = _mm256_castpd_si256(_mm256_permute2f128_pd(q0, q2, 0x31));
        G[3][h] = _mm256_castpd_si256(_mm256_permute2f128_pd(q1, q3, 0x31));
    }
}

// oscar_tcq_viterbi, 8 k to a vector; back[j]'s winners as two bit masks (low bit, high bit of c; bit k).
OSCAR_AVX2 static void tcq_viterbi_avx2(const float * cbs, const double * u, int rot, int overlap, uint8_t * path) {
    enum { V = OSCAR_TCQ_LINKS / 8 };
    int32_t  best[OSCAR_TCQ_LINKS];
    uint8_t  lo[OSCAR_QK][V], hi[OSCAR_QK][V];
    __m256i  B[V], G[4][2];
    for (int k = 0; k < OSCAR_TCQ_LINKS; k++) best[k] = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    for (int i = 0; i < V; i++) B[i] = _mm256_loadu_si256((const __m256i *) (best + 8 * i));
    for (int j = 0; j < OSCAR_QK; j++) {
        const __m256 v = _mm256_set1_ps(oscar_tcq_scaled(u[(j + rot) & (OSCAR_QK - 1)]));
        tcq_preds_avx2(B, G);
#pragma GCC unroll 8
        for (int i = 0; i < V; i++) {
            __m256i a[4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                const __m256 d = _mm256_sub_ps(v, _mm256_loadu_ps(cbs + c * OSCAR_TCQ_LINKS + 8 * i));
                a[c] = _mm256_add_epi32(G[c][i & 1], _mm256_cvttps_epi32(_mm256_mul_ps(d, d)));
            }
            const __m256i c1  = _mm256_cmpgt_epi32(a[0], a[1]), c3 = _mm256_cmpgt_epi32(a[2], a[3]);
            const __m256i m01 = _mm256_min_epi32(a[0], a[1]), m23 = _mm256_min_epi32(a[2], a[3]);
            const __m256i h   = _mm256_cmpgt_epi32(m01, m23);
            B[i]     = _mm256_min_epi32(m01, m23);
            lo[j][i] = (uint8_t) _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_blendv_epi8(c1, c3, h)));
            hi[j][i] = (uint8_t) _mm256_movemask_ps(_mm256_castsi256_ps(h));
        }
    }
    for (int i = 0; i < V; i++) _mm256_storeu_si256((__m256i *) (best + 8 * i), B[i]);
    int k = oscar_tcq_last(best, overlap);
    for (int j = OSCAR_QK - 1; j >= 0; j--) {
        const int c = ((lo[j][k >> 3] >> (k & 7)) & 1) | ((hi[j][k >> 3] >> (k & 7)) & 1) << 1;
        path[j] = (uint8_t) (k << 2 | c);
        k = path[j] & (OSCAR_TCQ_LINKS - 1);
    }
}

#define OSCAR_AVX512 __attribute__((target("avx512f")))

// oscar_tcq_viterbi, 16 k to a vector: B[i] = best[16i .. 16i + 15]; every vector's outputs k read the same old
// costs G[c] = best[4m + c], m = k % 16 (lanes 0-7 from B[0], B[1], lanes 8-15 from B[2], B[3]).
OSCAR_AVX512 static void tcq_viterbi_avx512(const float * cbs, const double * u, int rot, int overlap, uint8_t * path) {
    enum { V = OSCAR_TCQ_LINKS / 16 };
    int32_t   best[OSCAR_TCQ_LINKS];
    uint16_t  lo[OSCAR_QK][V], hi[OSCAR_QK][V];
    __m512i   B[V], G[4];
    for (int k = 0; k < OSCAR_TCQ_LINKS; k++) best[k] = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    for (int i = 0; i < V; i++) B[i] = _mm512_loadu_si512(best + 16 * i);
    const __m512i four = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    for (int j = 0; j < OSCAR_QK; j++) {
        const __m512 v = _mm512_set1_ps(oscar_tcq_scaled(u[(j + rot) & (OSCAR_QK - 1)]));
        for (int c = 0; c < 4; c++) {
            const __m512i idx = _mm512_add_epi32(four, _mm512_set1_epi32(c));
            G[c] = _mm512_mask_blend_epi32(0xff00, _mm512_permutex2var_epi32(B[0], idx, B[1]),
                                           _mm512_permutex2var_epi32(B[2], idx, B[3]));
        }
        for (int i = 0; i < V; i++) {
            __m512i a[4];
            for (int c = 0; c < 4; c++) {
                const __m512 d = _mm512_sub_ps(v, _mm512_loadu_ps(cbs + c * OSCAR_TCQ_LINKS + 16 * i));
                a[c] = _mm512_add_epi32(G[c], _mm512_cvttps_epi32(_mm512_mul_ps(d, d)));
            }
            const __mmask16 c1 = _mm512_cmpgt_epi32_mask(a[0], a[1]), c3 = _mm512_cmpgt_epi32_mask(a[2], a[3]);
            const __m512i   m01 = _mm512_min_epi32(a[0], a[1]), m23 = _mm512_min_epi32(a[2], a[3]);
            const __mmask16 h = _mm512_cmpgt_epi32_mask(m01, m23);
            B[i]     = _mm512_min_epi32(m01, m23);
            lo[j][i] = (uint16_t) ((h & c3) | (~h & c1));
            hi[j][i] = (uint16_t) h;
        }
    }
    for (int i = 0; i < V; i++) _mm512_storeu_si512(best + 16 * i, B[i]);
    int k = oscar_tcq_last(best, overlap);
    for (int j = OSCAR_QK - 1; j >= 0; j--) {
        const int c = ((lo[j][k >> 4] >> (k & 15)) & 1) | ((hi[j][k >> 4] >> (k & 15)) & 1) << 1;
        path[j] = (uint8_t) (k << 2 | c);
        k = path[j] & (OSCAR_TCQ_LINKS - 1);
    }
}

typedef void (*tcq_pass_fn)(const float * cbs, const double * u, int rot, int overlap, uint8_t * path);

static void tcq_quantize_row_simd(tcq_pass_fn pass, const float * cbs, const float * x, uint8_t * out, int64_t nb) {
    for (int64_t ib = 0; ib < nb; ib++) {
        double  u[OSCAR_QK], norm = 0.0;
        uint8_t turned[OSCAR_QK], w[OSCAR_QK];
        uint8_t * b = out + ib * OSCAR2_BLOCK_BYTES;
        if (!oscar_tcq_prepare(x + ib * OSCAR_QK, u, &norm, b)) continue;
        pass(cbs, u, OSCAR_QK / 2, -1, turned);  // the two passes of oscar_tcq_encode
        pass(cbs, u, 0, turned[OSCAR_QK / 2] & (OSCAR_TCQ_LINKS - 1), w);
        oscar_tcq_pack(oscar_tcq_cb, norm, w, b);
    }
}
#endif

void oscar2_quantize_row(const float * x, void * y, int64_t n) {
    float     cbs[OSCAR_TCQ_STATES];
    uint8_t * out = (uint8_t *) y;
    oscar_tcq_scaled_codebook(oscar_tcq_cb, cbs);
#ifdef OSCAR_X86
    if (__builtin_cpu_supports("avx512f")) {
        tcq_quantize_row_simd(tcq_viterbi_avx512, cbs, x, out, n / OSCAR_QK);
        return;
    }
    if (__builtin_cpu_supports("avx2")) {
        tcq_quantize_row_simd(tcq_viterbi_avx2, cbs, x, out, n / OSCAR_QK);
        return;
    }
#endif
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        oscar_tcq_quantize_block(oscar_tcq_cb, cbs, x + ib * OSCAR_QK, out + ib * OSCAR2_BLOCK_BYTES);
    }
}

size_t oscar2_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix) {
    (void) imatrix;  // KV data has no importance matrix
    oscar2_quantize_row(src, dst, nrows * n_per_row);
    return (size_t) (nrows * n_per_row / OSCAR_QK) * OSCAR2_BLOCK_BYTES;
}

// Decoding runs for every cached row a CPU attention step reads, so elements come 16 at a time from one 64-bit
// piece of the circle (oscar_tcq_bits) by constant shifts: no per-element byte loads or wrap tests.
static void tcq_decode_block(const uint8_t * b, float * y) {
    const float d = oscar_half_to_float(oscar_block_scale(b));
    for (int g = 0; g < 4; g++) {
        const uint64_t v = oscar_tcq_bits(b + 2, g);
        for (int k = 0; k < 16; k++) y[16 * g + k] = d * oscar_tcq_cb[(v >> (2 * k)) & (OSCAR_TCQ_STATES - 1)];
    }
}

#ifdef OSCAR_X86
// Two elements per lookup: the 10 stream bits from 2j are the windows of elements j and j + 1, so a table of their
// 1024 value pairs (8 KB, filled when the library loads) halves the lookups. Faster here than AVX2 or AVX-512
// gathers (an AMD EPYC: 0.021 against 0.028 / 0.034 us per block; the scalar code it replaced: 0.013).
static float tcq_pairs[4 * OSCAR_TCQ_STATES][2];

__attribute__((constructor)) static void tcq_pairs_init(void) {
    for (int w = 0; w < 4 * OSCAR_TCQ_STATES; w++) {
        tcq_pairs[w][0] = oscar_tcq_cb[w & (OSCAR_TCQ_STATES - 1)];
        tcq_pairs[w][1] = oscar_tcq_cb[w >> 2];
    }
}

OSCAR_AVX2 static void tcq_decode_block_avx2(const uint8_t * b, float * y) {
    for (int g = 0; g < 4; g++) {
        const uint64_t v = oscar_tcq_bits(b + 2, g);
        for (int k = 0; k < 16; k += 2) memcpy(y + 16 * g + k, tcq_pairs[(v >> (2 * k)) & (4 * OSCAR_TCQ_STATES - 1)], 8);
    }
    const __m256 d = _mm256_set1_ps(oscar_half_to_float(oscar_block_scale(b)));
    for (int i = 0; i < OSCAR_QK; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(d, _mm256_loadu_ps(y + i)));
}
#endif

void oscar2_dequantize_row(const void * x, float * y, int64_t n) {
    const uint8_t * in = (const uint8_t *) x;
#ifdef OSCAR_X86
    if (oscar_have_avx2()) {
        for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) tcq_decode_block_avx2(in + ib * OSCAR2_BLOCK_BYTES, y + ib * OSCAR_QK);
        return;
    }
#endif
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) tcq_decode_block(in + ib * OSCAR2_BLOCK_BYTES, y + ib * OSCAR_QK);
}
