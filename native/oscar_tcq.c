// oscar2 and oscar3, the bitshift-trellis codes (format and encoder in oscar_tcq_block.h): rows of 64-element blocks.
// On x86 with AVX2 (chosen at run time) each width's Viterbi pass keeps 8 survivors to a vector; its costs are the
// same integers and its tie rules the same, so it writes the same bytes as the scalar pass (tests/test_tcq_c.py
// compares the builds). An AVX-512 pass with 16 survivors to a vector was slower on an AMD EPYC (Zen 4 splits
// 512-bit operations: 4.5 against 3.7 us per oscar2 block) and was dropped.
#include "oscar.h"
#include "oscar_impl.h"
#include "oscar_tcq_block.h"
#include "oscar_tcq_codebook.h"
#include "oscar_tcq_vbmi.h"

static const float tcq_cb2[OSCAR_TCQ_STATES] = { OSCAR_TCQ2_CODEBOOK };
static const float tcq_cb3[OSCAR_TCQ_STATES] = { OSCAR_TCQ3_CODEBOOK };

static const float * tcq_cb(int s) { return s == 2 ? tcq_cb2 : tcq_cb3; }

const float * oscar_tcq_codebook(int bits) { return bits == 2 || bits == 3 ? tcq_cb(bits) : NULL; }

// The scaled codebooks the Viterbi passes read (oscar_tcq_scaled_codebook), and for AVX2 the same values in the low
// 16 bits of each lane (tcq_viterbi2_avx2, tcq_viterbi3_avx2); [s - 2]: filled once when the library loads.
static int32_t tcq_cbs[2][OSCAR_TCQ_STATES], tcq_cb16[2][OSCAR_TCQ_STATES];

__attribute__((constructor)) static void tcq_cbs_init(void) {
    for (int s = 2; s <= 3; s++) {
        oscar_tcq_scaled_codebook(s, tcq_cb(s), tcq_cbs[s - 2]);
        for (int w = 0; w < OSCAR_TCQ_STATES; w++) tcq_cb16[s - 2][w] = tcq_cbs[s - 2][w] & 0xffff;
    }
}

#ifdef OSCAR_X86
// The branch costs (vi - ci)^2 of 8 survivors: cb16 holds each ci in the low 16 bits of its lane and 0 above, and
// |vi|, |ci|, |vi - ci| fit in 16 bits, so a 16-bit subtract and madd (d x d + 0 x 0) give oscar_tcq_branch exactly.
OSCAR_AVX2 static inline __m256i tcq_branch_avx2(__m256i v, const int32_t * cb16) {
    const __m256i d = _mm256_sub_epi16(v, _mm256_loadu_si256((const __m256i *) cb16));
    return _mm256_madd_epi16(d, d);
}

// s = 2 (64 survivors k). G[c][h] = best[4m + c] for m = 8h .. 8h + 7, from B[i] = best[8i .. 8i + 7]: the old
// costs each group of 8 outputs k reads (k % 16 = m). Pairs (best[8i + c], best[8i + 4 + c]) as 64-bit lanes, then a
// 4 x 4 transpose.
OSCAR_AVX2 static inline void tcq_preds2_avx2(const __m256i * B, __m256i G[4][2]) {
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

// oscar_tcq_viterbi for s = 2, 8 k to a vector; back[j]'s winners as two bit masks (low bit, high bit of c; bit k).
OSCAR_AVX2 static void tcq_viterbi2_avx2(const double * u, int rot, int overlap, uint8_t * path) {
    enum { LINKS = OSCAR_TCQ_LINKS(2), V = LINKS / 8 };
    const int32_t * cb16 = tcq_cb16[0];
    int32_t  best[LINKS];
    uint8_t  lo[OSCAR_QK][V], hi[OSCAR_QK][V];
    __m256i  B[V], G[4][2];
    for (int k = 0; k < LINKS; k++) best[k] = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    for (int i = 0; i < V; i++) B[i] = _mm256_loadu_si256((const __m256i *) (best + 8 * i));
    for (int j = 0; j < OSCAR_QK; j++) {
        const __m256i v = _mm256_set1_epi32(oscar_tcq_scaled(u[(j + rot) & (OSCAR_QK - 1)]) & 0xffff);
        tcq_preds2_avx2(B, G);
#pragma GCC unroll 8
        for (int i = 0; i < V; i++) {
            __m256i a[4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) a[c] = _mm256_add_epi32(G[c][i & 1], tcq_branch_avx2(v, cb16 + c * LINKS + 8 * i));
            const __m256i c1  = _mm256_cmpgt_epi32(a[0], a[1]), c3 = _mm256_cmpgt_epi32(a[2], a[3]);
            const __m256i m01 = _mm256_min_epi32(a[0], a[1]), m23 = _mm256_min_epi32(a[2], a[3]);
            const __m256i h   = _mm256_cmpgt_epi32(m01, m23);
            B[i]     = _mm256_min_epi32(m01, m23);
            lo[j][i] = (uint8_t) _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_blendv_epi8(c1, c3, h)));
            hi[j][i] = (uint8_t) _mm256_movemask_ps(_mm256_castsi256_ps(h));
        }
    }
    for (int i = 0; i < V; i++) _mm256_storeu_si256((__m256i *) (best + 8 * i), B[i]);
    int k = oscar_tcq_last(2, best, overlap);
    for (int j = OSCAR_QK - 1; j >= 0; j--) {
        const int c = ((lo[j][k >> 3] >> (k & 7)) & 1) | ((hi[j][k >> 3] >> (k & 7)) & 1) << 1;
        path[j] = (uint8_t) (k << 2 | c);
        k = path[j] & (LINKS - 1);
    }
}

// s = 3 (32 survivors k). Output k reads best[(8k + c) % 32] = best[8 (k % 4) + c], so every group of 8 outputs
// reads the same G[c] = (best[c], best[8 + c], best[16 + c], best[24 + c]) twice: a 4 x 8 transpose of B.
OSCAR_AVX2 static inline void tcq_preds3_avx2(const __m256i * B, __m256i G[8]) {
    const __m256i l01 = _mm256_unpacklo_epi32(B[0], B[1]), h01 = _mm256_unpackhi_epi32(B[0], B[1]);
    const __m256i l23 = _mm256_unpacklo_epi32(B[2], B[3]), h23 = _mm256_unpackhi_epi32(B[2], B[3]);
    const __m256i q[4] = { _mm256_unpacklo_epi64(l01, l23), _mm256_unpackhi_epi64(l01, l23),   // c = 0 | 4, 1 | 5
                           _mm256_unpacklo_epi64(h01, h23), _mm256_unpackhi_epi64(h01, h23) };  // c = 2 | 6, 3 | 7
    for (int c = 0; c < 4; c++) {
        G[c]     = _mm256_permute2x128_si256(q[c], q[c], 0x00);
        G[c + 4] = _mm256_permute2x128_si256(q[c], q[c], 0x11);
    }
}

// oscar_tcq_viterbi for s = 3, 8 k to a vector; back[j]'s winners as three bit masks (bits 0, 1, 2 of c; bit k).
// The least of 8 by a tree of strict comparisons keeps the lowest c on ties, as the scalar pass.
OSCAR_AVX2 static void tcq_viterbi3_avx2(const double * u, int rot, int overlap, uint8_t * path) {
    enum { LINKS = OSCAR_TCQ_LINKS(3), V = LINKS / 8 };
    const int32_t * cb16 = tcq_cb16[1];
    int32_t  best[LINKS];
    uint8_t  bk[OSCAR_QK][3][V];
    __m256i  B[V], G[8];
    for (int k = 0; k < LINKS; k++) best[k] = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    for (int i = 0; i < V; i++) B[i] = _mm256_loadu_si256((const __m256i *) (best + 8 * i));
    for (int j = 0; j < OSCAR_QK; j++) {
        const __m256i v = _mm256_set1_epi32(oscar_tcq_scaled(u[(j + rot) & (OSCAR_QK - 1)]) & 0xffff);
        tcq_preds3_avx2(B, G);
#pragma GCC unroll 4
        for (int i = 0; i < V; i++) {
            __m256i a[8], m[4], b0[4];
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) a[c] = _mm256_add_epi32(G[c], tcq_branch_avx2(v, cb16 + c * LINKS + 8 * i));
            for (int p = 0; p < 4; p++) {
                b0[p] = _mm256_cmpgt_epi32(a[2 * p], a[2 * p + 1]);
                m[p]  = _mm256_min_epi32(a[2 * p], a[2 * p + 1]);
            }
            const __m256i h0 = _mm256_cmpgt_epi32(m[0], m[1]), h1 = _mm256_cmpgt_epi32(m[2], m[3]);
            const __m256i n0 = _mm256_min_epi32(m[0], m[1]), n1 = _mm256_min_epi32(m[2], m[3]);
            const __m256i t  = _mm256_cmpgt_epi32(n0, n1);
            const __m256i x0 = _mm256_blendv_epi8(b0[0], b0[1], h0), x1 = _mm256_blendv_epi8(b0[2], b0[3], h1);
            B[i]        = _mm256_min_epi32(n0, n1);
            bk[j][0][i] = (uint8_t) _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_blendv_epi8(x0, x1, t)));
            bk[j][1][i] = (uint8_t) _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_blendv_epi8(h0, h1, t)));
            bk[j][2][i] = (uint8_t) _mm256_movemask_ps(_mm256_castsi256_ps(t));
        }
    }
    for (int i = 0; i < V; i++) _mm256_storeu_si256((__m256i *) (best + 8 * i), B[i]);
    int k = oscar_tcq_last(3, best, overlap);
    for (int j = OSCAR_QK - 1; j >= 0; j--) {
        int c = 0;
        for (int b = 0; b < 3; b++) c |= ((bk[j][b][k >> 3] >> (k & 7)) & 1) << b;
        path[j] = (uint8_t) (k << 3 | c);
        k = path[j] & (LINKS - 1);
    }
}

OSCAR_AVX2 static void tcq_quantize_row_avx2(int s, const float * x, uint8_t * out, int64_t nb) {
    const size_t nbytes = oscar_block_bytes_inline(s);
    for (int64_t ib = 0; ib < nb; ib++) {
        double  u[OSCAR_QK], norm = 0.0;
        uint8_t turned[OSCAR_QK], w[OSCAR_QK];
        uint8_t * b = out + ib * nbytes;
        if (!oscar_tcq_prepare(s, x + ib * OSCAR_QK, u, &norm, b)) continue;
        if (s == 2) {  // the two passes of oscar_tcq_encode
            tcq_viterbi2_avx2(u, OSCAR_QK / 2, -1, turned);
            tcq_viterbi2_avx2(u, 0, oscar_tcq_seam(2, turned), w);
        } else {
            tcq_viterbi3_avx2(u, OSCAR_QK / 2, -1, turned);
            tcq_viterbi3_avx2(u, 0, oscar_tcq_seam(3, turned), w);
        }
        oscar_tcq_pack(s, tcq_cb(s), norm, w, b);
    }
}
#endif

static void tcq_quantize_row(int s, const float * x, void * y, int64_t n) {
    uint8_t * out = (uint8_t *) y;
#ifdef OSCAR_X86
    if (oscar_have_avx2()) {  // OSCAR_AVX2 code
        tcq_quantize_row_avx2(s, x, out, n / OSCAR_QK);
        return;
    }
#endif
    const size_t nbytes = oscar_block_bytes_inline(s);
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {  // each width inlined with its constant s
        if (s == 2) oscar_tcq_quantize_block(2, tcq_cb2, tcq_cbs[0], x + ib * OSCAR_QK, out + ib * nbytes);
        else        oscar_tcq_quantize_block(3, tcq_cb3, tcq_cbs[1], x + ib * OSCAR_QK, out + ib * nbytes);
    }
}

// Decoding runs for every cached row a CPU attention step reads, so elements come 16 at a time from one 64-bit
// piece of the circle (oscar_tcq_bits) by constant shifts: no per-element byte loads or wrap tests.
static void tcq_decode_block(int s, const uint8_t * b, float * y) {
    const float   d  = oscar_half_to_float(oscar_block_scale(b));
    const float * cb = tcq_cb(s);
    for (int g = 0; g < 4; g++) {
        const uint64_t v = oscar_tcq_bits(s, b + 2, g);
        for (int k = 0; k < 16; k++) y[16 * g + k] = d * cb[(v >> (s * k)) & (OSCAR_TCQ_STATES - 1)];
    }
}

#ifdef OSCAR_X86
// oscar2: several elements per lookup from a table of halves (the codebook is exact in half precision), widened by
// F16C: the 14 stream bits from 2j are the windows of elements j .. j + 3, so a table of their 16384 value
// quadruples (128 KB) quarters the lookups: on an AMD EPYC (Zen 4) 0.008 us per block against 0.020 for a 1024-entry
// table of float pairs and 0.013 for the scalar 2-bit code it replaced, also when the blocks stream from memory
// (scripts/tcq_speed.py times the library).
#define TCQ_QUADS (1 << (OSCAR_TCQ_L + 6))
static uint16_t tcq_quads[TCQ_QUADS][4];

__attribute__((constructor)) static void tcq_quads_init(void) {
    for (int w = 0; w < TCQ_QUADS; w++) {
        for (int e = 0; e < 4; e++) tcq_quads[w][e] = oscar_float_to_half_sat(tcq_cb2[(w >> (2 * e)) & (OSCAR_TCQ_STATES - 1)]);
    }
}

OSCAR_AVX2 static void tcq2_decode_block_avx2(const uint8_t * b, float * y) {
    const __m256 d = _mm256_set1_ps(oscar_scale_avx2(b));
    for (int g = 0; g < 4; g++) {
        const uint64_t v = oscar_tcq_bits(2, b + 2, g);
        for (int k = 0; k < 16; k += 8) {  // elements 16g + k .. + 7: quadruples at stream bits 2k and 2k + 8
            uint64_t lo, hi;
            memcpy(&lo, tcq_quads[(v >> (2 * k)) & (TCQ_QUADS - 1)], 8);
            memcpy(&hi, tcq_quads[(v >> (2 * k + 8)) & (TCQ_QUADS - 1)], 8);
            const __m128i h = _mm_set_epi64x((long long) hi, (long long) lo);
            _mm256_storeu_ps(y + 16 * g + k, _mm256_mul_ps(d, _mm256_cvtph_ps(h)));
        }
    }
}

// oscar3: the 11 stream bits from 3j are the windows of elements j and j + 1, so a table of their 2048 value pairs
// as floats (16 KB, filled when the library loads) halves the lookups (its quadruples would need 17 bits: 1 MB);
// 4 pairs go into one vector by loads (movsd, movhps), then one multiply by the scale. scripts/tcq_speed.py on an AMD
// EPYC (Zen 4): 0.010 us per block, against 0.028 when the pairs were stored to y and read back as vectors (8-byte
// stores do not forward to a wider load). Slower there in a one-off comparison: AVX2 gathers of the pairs, triples
// of halves from a 128 KB table, pairs of halves widened by F16C.
#define TCQ3_PAIRS (1 << (OSCAR_TCQ_L + 3))
static float tcq3_pairs[TCQ3_PAIRS][2];

__attribute__((constructor)) static void tcq3_pairs_init(void) {
    for (int w = 0; w < TCQ3_PAIRS; w++) {
        for (int e = 0; e < 2; e++) tcq3_pairs[w][e] = tcq_cb3[(w >> (3 * e)) & (OSCAR_TCQ_STATES - 1)];
    }
}

OSCAR_AVX2 static inline __m128 tcq3_two_pairs(uint64_t v, int k) {  // elements k .. k + 3 of v's 16
    const __m128d lo = _mm_load_sd((const double *) tcq3_pairs[(v >> (3 * k)) & (TCQ3_PAIRS - 1)]);
    return _mm_loadh_pi(_mm_castpd_ps(lo), (const __m64 *) tcq3_pairs[(v >> (3 * k + 6)) & (TCQ3_PAIRS - 1)]);
}

OSCAR_AVX2 static void tcq3_decode_block_avx2(const uint8_t * b, float * y) {
    const __m256 d = _mm256_set1_ps(oscar_scale_avx2(b));
    for (int g = 0; g < 4; g++) {
        const uint64_t v = oscar_tcq_bits(3, b + 2, g);
        for (int k = 0; k < 16; k += 8) {
            const __m256 x = _mm256_set_m128(tcq3_two_pairs(v, k + 4), tcq3_two_pairs(v, k));
            _mm256_storeu_ps(y + 16 * g + k, _mm256_mul_ps(d, x));
        }
    }
}

// AVX-512 with VBMI (oscar_tcq_vbmi.h), chosen at run time. scripts/tcq_speed.py on an AMD EPYC (Zen 4): 0.006 us a
// block for both widths against 0.010-0.012 for the AVX2 decoders. -DOSCAR_NO_AVX512 leaves it out (the tests'
// AVX2-only build).
static int have_vbmi(void) {
#ifdef OSCAR_NO_AVX512
    return 0;
#else
    static int cached = -1;
    if (cached < 0) {
        cached = oscar_have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512vbmi");
    }
    return cached;
#endif
}

static oscar_vbmi_tables tcq_vbmi[2];  // [s - 2]

__attribute__((constructor)) static void tcq_vbmi_init(void) {
    for (int s = 2; s <= 3; s++) oscar_vbmi_tables_init(&tcq_vbmi[s - 2], s, tcq_cb(s));
}

// nrows rows of per_row blocks, row r at in[r], into y (per_row 64 floats a row).
OSCAR_VBMI static void tcq_decode_vbmi(int s, const uint8_t * const * in, int64_t nrows, int64_t per_row, float * y) {
    const size_t          nbytes = oscar_block_bytes_inline(s);
    const oscar_vbmi_regs t      = oscar_vbmi_load(&tcq_vbmi[s - 2], s);
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t ib = 0; ib < per_row; ib++) {
            __m512  x[4];
            float * yb = y + (r * per_row + ib) * OSCAR_QK;
            oscar_vbmi_block(&t, in[r] + ib * nbytes, x);
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(yb + 16 * c, x[c]);
        }
    }
}
#endif

// nrows rows of per_row blocks each, row r at in[r], into y (per_row 64 floats a row).
static void tcq_decode_rows(int s, const uint8_t * const * in, int64_t nrows, int64_t per_row, float * y) {
    const size_t nbytes = oscar_block_bytes_inline(s);
#ifdef OSCAR_X86
    if (have_vbmi()) {
        tcq_decode_vbmi(s, in, nrows, per_row, y);
        return;
    }
    if (oscar_have_avx2()) {
        for (int64_t r = 0; r < nrows; r++) {  // the width chosen outside the block loop (inlined for it)
            float * yr = y + r * per_row * OSCAR_QK;
            if (s == 2) {
                for (int64_t ib = 0; ib < per_row; ib++) tcq2_decode_block_avx2(in[r] + ib * nbytes, yr + ib * OSCAR_QK);
            } else {
                for (int64_t ib = 0; ib < per_row; ib++) tcq3_decode_block_avx2(in[r] + ib * nbytes, yr + ib * OSCAR_QK);
            }
        }
        return;
    }
#endif
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t ib = 0; ib < per_row; ib++) tcq_decode_block(s, in[r] + ib * nbytes, y + (r * per_row + ib) * OSCAR_QK);
    }
}

static void tcq_dequantize_row(int s, const void * x, float * y, int64_t n) {
    const uint8_t * in = (const uint8_t *) x;
    tcq_decode_rows(s, &in, 1, n / OSCAR_QK, y);
}

#define OSCAR_TCQ_ROWS_MAX 64  // rows a set-up serves (a CPU attention tile has 16)

void oscar_tcq_rows_to_float(int bits, const char * base, size_t stride, const int64_t * rows, int n, int64_t len,
                             float * out) {
    const uint8_t * in[OSCAR_TCQ_ROWS_MAX];
    for (int r0 = 0; r0 < n; r0 += OSCAR_TCQ_ROWS_MAX) {
        const int nr = n - r0 < OSCAR_TCQ_ROWS_MAX ? n - r0 : OSCAR_TCQ_ROWS_MAX;
        for (int r = 0; r < nr; r++) in[r] = (const uint8_t *) base + rows[r0 + r] * (int64_t) stride;
        tcq_decode_rows(bits, in, nr, len / OSCAR_QK, out + r0 * len);
    }
}

#define OSCAR_TCQ_ROW_FUNCS(B)                                                                              \
    void oscar##B##_quantize_row(const float * x, void * y, int64_t n) { tcq_quantize_row(B, x, y, n); }     \
    void oscar##B##_dequantize_row(const void * x, float * y, int64_t n) { tcq_dequantize_row(B, x, y, n); } \
    size_t oscar##B##_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row,            \
                               const float * imatrix) {                                                     \
        (void) imatrix; /* KV data has no importance matrix */                                               \
        tcq_quantize_row(B, src, dst, nrows * n_per_row);                                                    \
        return (size_t) (nrows * n_per_row / OSCAR_QK) * OSCAR##B##_BLOCK_BYTES;                             \
    }

OSCAR_TCQ_ROW_FUNCS(2)
OSCAR_TCQ_ROW_FUNCS(3)
