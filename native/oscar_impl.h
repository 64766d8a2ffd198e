// Host-side helpers shared by oscar.c and oscar_dot.c (not part of the API).
#ifndef OSCAR_IMPL_H
#define OSCAR_IMPL_H

#include <stdint.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "oscar_block.h"

// Host codebook of oscar4 (oscar2 and oscar3 are trellis codes: oscar_tcq.c).
static const float oscar_levels4[16] = { OSCAR_LEVELS4 };

// oscar_block_bytes, inline for the loops that run once per cached row (a call through the PLT showed in a decode
// profile): oscar.h's block sizes, 0 for other widths.
static inline size_t oscar_block_bytes_inline(int bits) {
    return bits == 2 ? OSCAR2_BLOCK_BYTES : bits == 3 ? OSCAR3_BLOCK_BYTES : bits == 4 ? OSCAR4_BLOCK_BYTES : 0;
}

static inline float oscar_half_to_float(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return oscar_half_to_float_portable(h);
#endif
}


#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(OSCAR_PORTABLE_C)
#define OSCAR_X86 1
#include <immintrin.h>
#define OSCAR_AVX2 __attribute__((target("avx2,fma,f16c")))

// ggml-base is built for the baseline ISA, so its AVX2 paths (AVX2, FMA and F16C: every AVX2 CPU has all three) are
// chosen at run time.
static inline int oscar_have_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    return cached;
}

// A block's scale in OSCAR_AVX2 code: one instruction (oscar_half_to_float is the baseline build's bit-by-bit
// conversion there, an out-of-line call per block that showed in a CPU decode profile).
OSCAR_AVX2 static inline float oscar_scale_avx2(const uint8_t * block) { return _cvtsh_ss(oscar_block_scale(block)); }

// The 64 codes of an oscar4 block as eight vectors of 8 int32 indices, in element order (byte j: elements j, low
// nibble, and j + 32, high nibble).
OSCAR_AVX2 static inline void oscar_codes4_avx2(const uint8_t * qs, __m256i idx[8]) {
    const __m256i raw = _mm256_loadu_si256((const __m256i *) qs);
    const __m256i m4  = _mm256_set1_epi8(0x0f);
    const __m256i c[2] = { _mm256_and_si256(raw, m4), _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4) };
    for (int h = 0; h < 2; h++) {
        const __m128i a = _mm256_castsi256_si128(c[h]), b = _mm256_extracti128_si256(c[h], 1);
        idx[4 * h + 0] = _mm256_cvtepu8_epi32(a);
        idx[4 * h + 1] = _mm256_cvtepu8_epi32(_mm_srli_si128(a, 8));
        idx[4 * h + 2] = _mm256_cvtepu8_epi32(b);
        idx[4 * h + 3] = _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8));
    }
}

// Look up 8 indices in a table of 16 floats held as two 8-lane halves.
OSCAR_AVX2 static inline __m256 oscar_lut16_avx2(__m256i idx, __m256 lo, __m256 hi) {
    const __m256 a = _mm256_permutevar8x32_ps(lo, idx);
    const __m256 b = _mm256_permutevar8x32_ps(hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));  // bit 3 -> sign bit
}
#endif

#endif // OSCAR_IMPL_H
