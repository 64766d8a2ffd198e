// Scalar block math shared by the CPU code (oscar.c, oscar_dot.c) and the CUDA kernels (oscar.cuh):
// one definition of how a block is quantized, so the GPU writes exactly the bytes the CPU would.
#ifndef OSCAR_BLOCK_H
#define OSCAR_BLOCK_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "oscar.h"

#if defined(__CUDACC__)
#define OSCAR_HD static inline __host__ __device__
#else
#define OSCAR_HD static inline
#endif
// For a function whose loops a caller's constant arguments should shape (it is inlined there).
#if defined(__CUDACC__)
#define OSCAR_HD_FLAT static __forceinline__ __host__ __device__
#elif defined(__GNUC__) || defined(__clang__)
#define OSCAR_HD_FLAT static inline __attribute__((always_inline))
#else
#define OSCAR_HD_FLAT static inline
#endif

// Lloyd-Max reconstruction levels for N(0,1) of oscar4 (oscar2 and oscar3 are trellis codes: oscar_tcq_block.h);
// oscar_gguf/codebook.py recomputes them by Lloyd's iteration and tests/test_codec.py checks the agreement. A list, so
// host tables and CUDA __constant__ tables share it.
#define OSCAR_LEVELS4 -2.732589571f, -2.069017227f, -1.618046386f, -1.256231197f, \
                      -0.942340456f, -0.656759119f, -0.388048299f, -0.128395030f, \
                       0.128395030f,  0.388048299f,  0.656759119f,  0.942340456f, \
                       1.256231197f,  1.618046386f,  2.069017227f,  2.732589571f

#define OSCAR_FP16_NAN 0x7e00u
#define OSCAR_FP16_MAX 0x7bffu

OSCAR_HD float oscar_bits_to_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
OSCAR_HD uint32_t oscar_float_to_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

OSCAR_HD float oscar_half_to_float_portable(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp  = (h >> 10) & 0x1f;
    uint32_t       man  = h & 0x3ff;
    if (exp == 0x1f) return oscar_bits_to_float(sign | 0x7f800000u | (man << 13));
    if (exp != 0)    return oscar_bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0)    return oscar_bits_to_float(sign);
    int e = 113;  // subnormal: renormalize
    while (!(man & 0x400)) { man <<= 1; e--; }
    return oscar_bits_to_float(sign | ((uint32_t) e << 23) | ((man & 0x3ff) << 13));
}

// float32 -> fp16, round to nearest even; finite values that would round to infinity saturate.
OSCAR_HD uint16_t oscar_float_to_half_sat(float f) {
    const uint32_t x    = oscar_float_to_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax   = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return OSCAR_FP16_NAN;
    if (ax >= 0x477ff000u) return sign | OSCAR_FP16_MAX;  // >= 65520 rounds to inf: saturate
    if (ax < 0x38800000u) {                                  // below the smallest normal fp16
        if (ax < 0x33000000u) return sign;                   // below half the smallest subnormal
        const uint32_t e     = ax >> 23;
        const uint32_t man   = (ax & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - e;                      // value / 2^-24 = man * 2^(e - 126)
        uint32_t h = man >> shift;
        const uint32_t rem  = man & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return sign | (uint16_t) h;
    }
    uint32_t h = (ax >> 13) - (112u << 10);
    const uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t) h;
}

// Code of element i of an oscar4 block's code bytes (layout in oscar.h).
OSCAR_HD int oscar_code4(const uint8_t * qs, int i) { return (qs[i % 32] >> (4 * (i / 32))) & 15; }

OSCAR_HD uint16_t oscar_block_scale(const uint8_t * block) {
    return (uint16_t)(block[0] | (block[1] << 8));
}

// Infinities count as the largest finite float of their sign, so a block with one stays finite.
OSCAR_HD float oscar_clamp_inf(float x) { return isinf(x) ? copysignf(FLT_MAX, x) : x; }

// Decision threshold between levels k and k + 1, compared in double.
OSCAR_HD double oscar_threshold(const float * levels, int k) { return 0.5 * ((double) levels[k] + (double) levels[k + 1]); }

// Stored fp16 scale of a block with norm ||x|| whose chosen levels have squared norm lv2 (keeps the norm).
OSCAR_HD uint16_t oscar_scale_bits(double norm, double lv2) { return oscar_float_to_half_sat((float) (norm / sqrt(lv2))); }

// Sum of squares of a block's 64 floats in double, +-Inf counting as +-FLT_MAX; *nan set when one is NaN. Each
// square of a float is exact in double, so a contracted (FMA) build sums the same bits.
OSCAR_HD double oscar_block_sumsq(const float * x, int * nan) {
    double ss = 0.0;
    for (int i = 0; i < OSCAR_QK; i++) {
        const float xi = oscar_clamp_inf(x[i]);
        *nan |= isnan(xi);
        ss += (double) xi * (double) xi;
    }
    return ss;
}

// Quantize 64 floats into one oscar4 block (34 bytes) with the codebook `levels` (16 entries).
// NaN anywhere -> NaN scale; +-Inf counts as +-FLT_MAX; all zeros -> zero scale; norm math in double.
OSCAR_HD void oscar_quantize_block(const float * levels, const float * x, uint8_t * out) {
    int          nan = 0;
    const double ss  = oscar_block_sumsq(x, &nan);
    for (int i = 0; i < OSCAR4_BLOCK_BYTES; i++) out[i] = 0;
    uint16_t d = 0;
    if (nan) {
        d = OSCAR_FP16_NAN;
    } else if (ss > 0.0) {
        double thr[15];  // midpoints between neighbouring float levels, compared in double
        for (int k = 0; k < 15; k++) thr[k] = oscar_threshold(levels, k);
        const double norm = sqrt(ss);
        const double inv  = 8.0 / norm;  // sqrt(64) / ||x||
        double lv2 = 0.0;
        uint8_t * qs = out + 2;
        for (int i = 0; i < OSCAR_QK; i++) {
            const double u = (double) oscar_clamp_inf(x[i]) * inv;
            int c = 0;
            for (int k = 0; k < 15; k++) c += u > thr[k];
            lv2 += (double) levels[c] * (double) levels[c];
            qs[i % 32] |= (uint8_t)(c << (4 * (i / 32)));
        }
        d = oscar_scale_bits(norm, lv2);
    }
    out[0] = (uint8_t)(d & 0xff);
    out[1] = (uint8_t)(d >> 8);
}

#endif // OSCAR_BLOCK_H
