// OScaR block codec: quantize and dequantize rows of 64-element blocks (format in oscar.h).
#include "oscar.h"
#include "oscar_impl.h"

size_t oscar_block_bytes(int bits) {
    switch (bits) {
        case 2: return OSCAR2_BLOCK_BYTES;
        case 3: return OSCAR3_BLOCK_BYTES;
        case 4: return OSCAR4_BLOCK_BYTES;
        default: return 0;
    }
}

const float * oscar_levels(int bits) {
    return (bits == 3 || bits == 4) ? oscar_levels_of(bits) : NULL;  // oscar2: the trellis codebook
}

void oscar_quantize_row(int bits, const float * x, void * y, int64_t n) {
    if (bits == 2) {
        oscar2_quantize_row(x, y, n);
        return;
    }
    const size_t nbytes = oscar_block_bytes(bits);
    uint8_t * out = (uint8_t *) y;
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        oscar_quantize_block(bits, oscar_levels_of(bits), x + ib * OSCAR_QK, out + ib * nbytes);
    }
}

// Decoding runs for every cached row CPU flash attention reads, so each width gets a loop over whole code bytes
// instead of a per-element switch.
static void dequantize_block(int bits, const uint8_t * b, float * y) {
    const float * L  = oscar_levels_of(bits);
    const float   d  = oscar_half_to_float(oscar_block_scale(b));
    const uint8_t * qs = b + 2;
    float lut[16];
    for (int k = 0; k < (1 << bits); k++) lut[k] = d * L[k];
    if (bits == 4) {
        for (int j = 0; j < 32; j++) {
            y[j]      = lut[qs[j] & 15];
            y[j + 32] = lut[qs[j] >> 4];
        }
    } else {
        for (int j = 0; j < 16; j++) {
            const int q  = qs[j];
            const int h0 = (qs[16 + j % 8] >> (j / 8)) & 1;      // element j
            const int h1 = (qs[16 + j % 8] >> (2 + j / 8)) & 1;  // element j + 16
            const int h2 = (qs[16 + j % 8] >> (4 + j / 8)) & 1;  // element j + 32
            const int h3 = (qs[16 + j % 8] >> (6 + j / 8)) & 1;  // element j + 48
            y[j]      = lut[(q & 3) | h0 << 2];
            y[j + 16] = lut[((q >> 2) & 3) | h1 << 2];
            y[j + 32] = lut[((q >> 4) & 3) | h2 << 2];
            y[j + 48] = lut[(q >> 6) | h3 << 2];
        }
    }
}

#ifdef OSCAR_X86
OSCAR_AVX2 static void dequantize_block_avx2(int bits, const uint8_t * b, float * y) {
    float lut[16] = { 0 };
    const float d = oscar_half_to_float(oscar_block_scale(b));
    const float * L = oscar_levels_of(bits);
    for (int k = 0; k < (1 << bits); k++) lut[k] = d * L[k];
    const __m256 lo = _mm256_loadu_ps(lut), hi = _mm256_loadu_ps(lut + 8);
    __m256i idx[8];
    oscar_codes_avx2(bits, b + 2, idx);
    for (int j = 0; j < 8; j++) _mm256_storeu_ps(y + 8 * j, oscar_lut_avx2(bits, idx[j], lo, hi));
}
#endif

void oscar_dequantize_row(int bits, const void * x, float * y, int64_t n) {
    if (bits == 2) {
        oscar2_dequantize_row(x, y, n);
        return;
    }
    const size_t    nbytes = oscar_block_bytes(bits);
    const uint8_t * in     = (const uint8_t *) x;
#ifdef OSCAR_X86
    if (oscar_have_avx2()) {
        for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) dequantize_block_avx2(bits, in + ib * nbytes, y + ib * OSCAR_QK);
        return;
    }
#endif
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        dequantize_block(bits, in + ib * nbytes, y + ib * OSCAR_QK);
    }
}

#define OSCAR_ROW_FUNCS(B)                                                                              \
    void oscar##B##_quantize_row(const float * x, void * y, int64_t n) { oscar_quantize_row(B, x, y, n); } \
    void oscar##B##_dequantize_row(const void * x, float * y, int64_t n) { oscar_dequantize_row(B, x, y, n); } \
    size_t oscar##B##_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row,        \
                               const float * imatrix) {                                                 \
        (void) imatrix; /* KV data has no importance matrix */                                           \
        oscar_quantize_row(B, src, dst, nrows * n_per_row);                                              \
        return (size_t)(nrows * n_per_row / OSCAR_QK) * OSCAR##B##_BLOCK_BYTES;                          \
    }

OSCAR_ROW_FUNCS(3)
OSCAR_ROW_FUNCS(4)
