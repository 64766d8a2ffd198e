// oscar2, the bitshift-trellis 2-bit code (format and encoder in oscar_tcq_block.h): rows of 64-element blocks. On
// x86 with AVX2 (chosen at run time) the Viterbi pass keeps 8 survivors to a vector; its costs are the same integers
// and its tie rules the same, so it writes the same bytes as the scalar pass (tests/test_tcq_c.py compares the
// builds). An AVX-512 pass with 16 survivors to a vector was slower on an AMD EPYC (Zen 4 splits 512-bit operations:
// 4.5 against 3.7 us per block) and was dropped.
#include "oscar.h"
#include "oscar_impl.h"
#include "oscar_tcq_block.h"
#include "oscar_tcq_codebook.h"

static const float oscar_tcq_cb[OSCAR_TCQ_STATES] = { OSCAR_TCQ_CODEBOOK };

const float * oscar_tcq_codebook(void) { return oscar_tcq_cb; }

// The scaled codebook the Viterbi passes read (oscar_tcq_scaled_codebook), and for AVX2 the same values in the low
// 16 bits of each lane (tcq_viterbi_avx2): filled once when the library loads.
static int32_t tcq_cbs[OSCAR_TCQ_STATES], tcq_cb16[OSCAR_TCQ_STATES];

__attribute__((constructor)) static void tcq_cbs_init(void) {
    oscar_tcq_scaled_codebook(oscar_tcq_cb, tcq_cbs);
    for (int s = 0; s < OSCAR_TCQ_STATES; s++) tcq_cb16[s] = tcq_cbs[s] & 0xffff;
}

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

// oscar_tcq_viterbi, 8 k to a vector; back[j]'s winners as two bit masks (low bit, high bit of c; bit k). cb16 is
// cbs with each value in the low 16 bits of its lane and 0 above: |vi|, |ci|, |vi - ci| fit in 16 bits, so a 16-bit
// subtract and madd (d x d + 0 x 0) give the exact (vi - ci)^2 of oscar_tcq_branch.
OSCAR_AVX2 static void tcq_viterbi_avx2(const int32_t * cb16, const double * u, int rot, int overlap, uint8_t * path) {
    enum { V = OSCAR_TCQ_LINKS / 8 };
    int32_t  best[OSCAR_TCQ_LINKS];
    uint8_t  lo[OSCAR_QK][V], hi[OSCAR_QK][V];
    __m256i  B[V], G[4][2];
    for (int k = 0; k < OSCAR_TCQ_LINKS; k++) best[k] = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    for (int i = 0; i < V; i++) B[i] = _mm256_loadu_si256((const __m256i *) (best + 8 * i));
    for (int j = 0; j < OSCAR_QK; j++) {
        const __m256i v = _mm256_set1_epi32(oscar_tcq_scaled(u[(j + rot) & (OSCAR_QK - 1)]) & 0xffff);
        tcq_preds_avx2(B, G);
#pragma GCC unroll 8
        for (int i = 0; i < V; i++) {
            __m256i a[4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                const __m256i d = _mm256_sub_epi16(v, _mm256_loadu_si256((const __m256i *) (cb16 + c * OSCAR_TCQ_LINKS + 8 * i)));
                a[c] = _mm256_add_epi32(G[c][i & 1], _mm256_madd_epi16(d, d));
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

OSCAR_AVX2 static void tcq_quantize_row_avx2(const float * x, uint8_t * out, int64_t nb) {
    for (int64_t ib = 0; ib < nb; ib++) {
        double  u[OSCAR_QK], norm = 0.0;
        uint8_t turned[OSCAR_QK], w[OSCAR_QK];
        uint8_t * b = out + ib * OSCAR2_BLOCK_BYTES;
        if (!oscar_tcq_prepare(x + ib * OSCAR_QK, u, &norm, b)) continue;
        tcq_viterbi_avx2(tcq_cb16, u, OSCAR_QK / 2, -1, turned);  // the two passes of oscar_tcq_encode
        tcq_viterbi_avx2(tcq_cb16, u, 0, turned[OSCAR_QK / 2] & (OSCAR_TCQ_LINKS - 1), w);
        oscar_tcq_pack(oscar_tcq_cb, norm, w, b);
    }
}
#endif

void oscar2_quantize_row(const float * x, void * y, int64_t n) {
    uint8_t * out = (uint8_t *) y;
#ifdef OSCAR_X86
    if (oscar_have_avx2()) {  // OSCAR_AVX2 code: avx2 and fma
        tcq_quantize_row_avx2(x, out, n / OSCAR_QK);
        return;
    }
#endif
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        oscar_tcq_quantize_block(oscar_tcq_cb, tcq_cbs, x + ib * OSCAR_QK, out + ib * OSCAR2_BLOCK_BYTES);
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
// Four elements per lookup: the 14 stream bits from 2j are the windows of elements j .. j + 3, so a table of their
// 16384 value quadruples in half precision (128 KB, filled when the library loads; the codebook is exact in halves)
// quarters the lookups, and F16C widens 8 values at once. On an AMD EPYC (Zen 4) 0.008 us per block against 0.020
// for a 1024-entry table of float pairs and 0.013 for the scalar 2-bit code it replaced, also when the blocks stream
// from memory (scripts/tcq_speed.py times the library).
#define TCQ_QUADS (1 << (OSCAR_TCQ_L + 6))
static uint16_t tcq_quads[TCQ_QUADS][4];

__attribute__((constructor)) static void tcq_quads_init(void) {
    for (int w = 0; w < TCQ_QUADS; w++) {
        for (int e = 0; e < 4; e++) tcq_quads[w][e] = oscar_float_to_half_sat(oscar_tcq_cb[(w >> (2 * e)) & (OSCAR_TCQ_STATES - 1)]);
    }
}

__attribute__((target("avx2,fma,f16c"))) static void tcq_decode_block_f16c(const uint8_t * b, float * y) {
    const __m256 d = _mm256_set1_ps(oscar_half_to_float(oscar_block_scale(b)));
    for (int g = 0; g < 4; g++) {
        const uint64_t v = oscar_tcq_bits(b + 2, g);
        for (int k = 0; k < 16; k += 8) {  // elements 16g + k .. + 7: quadruples at stream bits 2k and 2k + 8
            uint64_t lo, hi;
            memcpy(&lo, tcq_quads[(v >> (2 * k)) & (TCQ_QUADS - 1)], 8);
            memcpy(&hi, tcq_quads[(v >> (2 * k + 8)) & (TCQ_QUADS - 1)], 8);
            const __m128i h = _mm_set_epi64x((long long) hi, (long long) lo);
            _mm256_storeu_ps(y + 16 * g + k, _mm256_mul_ps(d, _mm256_cvtph_ps(h)));
        }
    }
}

static int have_f16c(void) {
    static int cached = -1;
    if (cached < 0) cached = oscar_have_avx2() && __builtin_cpu_supports("f16c");
    return cached;
}
#endif

void oscar2_dequantize_row(const void * x, float * y, int64_t n) {
    const uint8_t * in = (const uint8_t *) x;
#ifdef OSCAR_X86
    if (have_f16c()) {
        for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) tcq_decode_block_f16c(in + ib * OSCAR2_BLOCK_BYTES, y + ib * OSCAR_QK);
        return;
    }
#endif
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) tcq_decode_block(in + ib * OSCAR2_BLOCK_BYTES, y + ib * OSCAR_QK);
}
