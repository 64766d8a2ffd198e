// Dot product of an OScaR row with a float32 vector: the K.Q product of CPU flash attention.
// Compiled into ggml-cpu (with its SIMD flags) and into the Python library.
#include "oscar.h"
#include "oscar_impl.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

// 8 codes (bytes) -> 8 floats looked up in a table of up to 16 levels.
static inline __m256 lut8(__m128i codes8, __m256 lo, __m256 hi, int bits) {
    const __m256i idx = _mm256_cvtepu8_epi32(codes8);
    if (bits < 4) return _mm256_permutevar8x32_ps(lo, idx);
    const __m256 a = _mm256_permutevar8x32_ps(lo, idx);
    const __m256 b = _mm256_permutevar8x32_ps(hi, idx);
    const __m256 use_hi = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // bit 3 -> sign bit
    return _mm256_blendv_ps(a, b, use_hi);
}

static float dot_block(int bits, const uint8_t * b, const float * y, __m256 lo, __m256 hi) {
    const uint8_t * qs = b + 2;
    __m256 acc = _mm256_setzero_ps();
    if (bits == 4) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *) qs);  // byte j: elements j, j+32
        const __m256i m4  = _mm256_set1_epi8(0x0f);
        const __m256i c0  = _mm256_and_si256(raw, m4);
        const __m256i c1  = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        const __m128i parts[4] = { _mm256_castsi256_si128(c0), _mm256_extracti128_si256(c0, 1),
                                   _mm256_castsi256_si128(c1), _mm256_extracti128_si256(c1, 1) };
        for (int p = 0; p < 4; p++) {
            acc = _mm256_fmadd_ps(lut8(parts[p], lo, hi, 4), _mm256_loadu_ps(y + 16 * p), acc);
            acc = _mm256_fmadd_ps(lut8(_mm_srli_si128(parts[p], 8), lo, hi, 4), _mm256_loadu_ps(y + 16 * p + 8), acc);
        }
    } else {
        const __m128i raw = _mm_loadu_si128((const __m128i *) qs);     // byte j: elements j+16k
        const __m128i m2  = _mm_set1_epi8(3);
        __m128i hb = _mm_setzero_si128();
        if (bits == 3) {
            // high bits: byte 16 + j%8 bit j/8; spread to one byte per element of this 16-run below
            uint64_t h;
            memcpy(&h, qs + 16, sizeof h);
            hb = _mm_set1_epi64x((long long) h);
        }
        for (int k = 0; k < 4; k++) {
            __m128i c = _mm_and_si128(_mm_srli_epi16(raw, 2 * k), m2);
            if (bits == 3) {
                // element i = 16k + j (j < 16) takes bit (i / 8) = 2k + j/8 of byte 16 + j % 8
                const __m128i sel   = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
                const __m128i bytes = _mm_shuffle_epi8(hb, sel);
                const __m128i mask  = _mm_setr_epi8((char)(1 << (2 * k)), (char)(1 << (2 * k)), (char)(1 << (2 * k)), (char)(1 << (2 * k)),
                                                    (char)(1 << (2 * k)), (char)(1 << (2 * k)), (char)(1 << (2 * k)), (char)(1 << (2 * k)),
                                                    (char)(2 << (2 * k)), (char)(2 << (2 * k)), (char)(2 << (2 * k)), (char)(2 << (2 * k)),
                                                    (char)(2 << (2 * k)), (char)(2 << (2 * k)), (char)(2 << (2 * k)), (char)(2 << (2 * k)));
                const __m128i set   = _mm_cmpeq_epi8(_mm_and_si128(bytes, mask), mask);
                c = _mm_or_si128(c, _mm_and_si128(set, _mm_set1_epi8(4)));
            }
            acc = _mm256_fmadd_ps(lut8(c, lo, hi, bits), _mm256_loadu_ps(y + 16 * k), acc);
            acc = _mm256_fmadd_ps(lut8(_mm_srli_si128(c, 8), lo, hi, bits), _mm256_loadu_ps(y + 16 * k + 8), acc);
        }
    }
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

float oscar_dot_row(int bits, const void * x, const float * y, int64_t n) {
    const float *   levels = oscar_levels_of(bits);
    const size_t    nbytes = oscar_block_bytes(bits);
    const uint8_t * in     = (const uint8_t *) x;
    float lut[16] = { 0 };  // padded: permutevar reads 8 lanes
    memcpy(lut, levels, sizeof(float) << bits);
    const __m256 lo = _mm256_loadu_ps(lut);
    const __m256 hi = _mm256_loadu_ps(lut + 8);
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        const uint8_t * b = in + ib * nbytes;
        sum += oscar_half_to_float(oscar_block_scale(b)) * dot_block(bits, b, y + ib * OSCAR_QK, lo, hi);
    }
    return sum;
}

#else

float oscar_dot_row(int bits, const void * x, const float * y, int64_t n) {
    const float *   levels = oscar_levels_of(bits);
    const size_t    nbytes = oscar_block_bytes(bits);
    const uint8_t * in     = (const uint8_t *) x;
    float sum = 0.0f;
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        const uint8_t * b = in + ib * nbytes;
        const float * yb = y + ib * OSCAR_QK;
        float acc = 0.0f;
        for (int i = 0; i < OSCAR_QK; i++) acc += levels[oscar_code(bits, b + 2, i)] * yb[i];
        sum += oscar_half_to_float(oscar_block_scale(b)) * acc;
    }
    return sum;
}

#endif

#define OSCAR_DOT_FUNC(B)                                                                               \
    void oscar##B##_vec_dot_f32(int n, float * s, size_t bs, const void * x, size_t bx, const void * y,  \
                                size_t by, int nrc) {                                                   \
        (void) bs; (void) bx; (void) by; (void) nrc; /* one row at a time (nrows = 1 in the traits) */  \
        *s = oscar_dot_row(B, x, (const float *) y, n);                                                 \
    }

OSCAR_DOT_FUNC(2)
OSCAR_DOT_FUNC(3)
OSCAR_DOT_FUNC(4)
