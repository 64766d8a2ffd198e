// Dot product of an OScaR row with a float32 vector: the K.Q product of CPU flash attention (upstream's, without
// the f16 tier).
// Compiled into ggml-cpu (with its SIMD flags) and into the Python library.
#include "oscar.h"
#include "oscar_impl.h"

#if defined(OSCAR_X86) && defined(__AVX2__) && defined(__FMA__)

static inline float dot64(const float * a, const float * b) {
    __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b));
    for (int j = 8; j < OSCAR_QK; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float dot_row4(const void * x, const float * y, int64_t n) {
    const uint8_t * in = (const uint8_t *) x;
    const __m256    lo = _mm256_loadu_ps(oscar_levels4);
    const __m256    hi = _mm256_loadu_ps(oscar_levels4 + 8);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        const uint8_t * b  = in + ib * OSCAR4_BLOCK_BYTES;
        const float *   yb = y + ib * OSCAR_QK;
        __m256i idx[8];
        oscar_codes4_avx2(b + 2, idx);
        __m256 acc = _mm256_mul_ps(oscar_lut16_avx2(idx[0], lo, hi), _mm256_loadu_ps(yb));
        for (int j = 1; j < 8; j++) acc = _mm256_fmadd_ps(oscar_lut16_avx2(idx[j], lo, hi), _mm256_loadu_ps(yb + 8 * j), acc);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        sum += oscar_scale_avx2(b) * _mm_cvtss_f32(s);
    }
    return sum;
}

#else

static inline float dot64(const float * a, const float * b) {
    float acc = 0.0f;
    for (int j = 0; j < OSCAR_QK; j++) acc += a[j] * b[j];
    return acc;
}

static inline float dot_row4(const void * x, const float * y, int64_t n) {
    const uint8_t * in = (const uint8_t *) x;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        const uint8_t * b = in + ib * OSCAR4_BLOCK_BYTES;
        const float * yb = y + ib * OSCAR_QK;
        float acc = 0.0f;
        for (int i = 0; i < OSCAR_QK; i++) acc += oscar_levels4[oscar_code4(b + 2, i)] * yb[i];
        sum += oscar_half_to_float(oscar_block_scale(b)) * acc;
    }
    return sum;
}

#endif

// oscar2, oscar3 (the trellis codes): up to TCQ_DOT_BLOCKS blocks decoded by one oscar_dequantize_row call (the
// decoder's set-up, the AVX-512 tables, once a call), then each block dotted in order.
#define TCQ_DOT_BLOCKS 16
static float tcq_dot_row(int bits, const void * x, const float * y, int64_t n) {
    const uint8_t * in     = (const uint8_t *) x;
    const size_t    nbytes = oscar_block_bytes_inline(bits);
    const int64_t   nb     = n / OSCAR_QK;
    float sum = 0.0f, v[TCQ_DOT_BLOCKS * OSCAR_QK];
    for (int64_t b0 = 0; b0 < nb; b0 += TCQ_DOT_BLOCKS) {
        const int64_t m = nb - b0 < TCQ_DOT_BLOCKS ? nb - b0 : TCQ_DOT_BLOCKS;
        oscar_dequantize_row(bits, in + b0 * nbytes, v, m * OSCAR_QK);
        for (int64_t i = 0; i < m; i++) sum += dot64(v + i * OSCAR_QK, y + (b0 + i) * OSCAR_QK);
    }
    return sum;
}

float oscar_dot_row(int bits, const void * x, const float * y, int64_t n) {
    return bits == 4 ? dot_row4(x, y, n) : tcq_dot_row(bits, x, y, n);
}

#define OSCAR_DOT_FUNC(B)                                                                               \
    void oscar##B##_vec_dot_f32(int n, float * s, size_t bs, const void * x, size_t bx, const void * y,  \
                                size_t by, int nrc) {                                                   \
        (void) bs; (void) bx; (void) by; (void) nrc; /* one row at a time (nrows = 1 in the traits) */  \
        *s = oscar_dot_row(B, x, (const float *) y, n);                                                 \
    }

OSCAR_DOT_FUNC(2)
OSCAR_DOT_FUNC(3)
OSCAR_DOT_FUNC(4)
