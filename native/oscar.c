// OScaR block codec: quantize and dequantize rows of 64-element blocks (format in oscar.h).
#include "oscar.h"
#include "oscar_impl.h"

size_t oscar_block_bytes(int bits) { return oscar_block_bytes_inline(bits); }

const float * oscar_levels(int bits) {
    return bits == 4 ? oscar_levels4 : NULL;  // oscar2, oscar3: the trellis codebooks (oscar_tcq_codebook)
}

void oscar_quantize_row(int bits, const float * x, void * y, int64_t n) {
    if (bits == 2 || bits == 3) {
        (bits == 2 ? oscar2_quantize_row : oscar3_quantize_row)(x, y, n);
        return;
    }
    uint8_t * out = (uint8_t *) y;
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) {
        oscar_quantize_block(oscar_levels4, x + ib * OSCAR_QK, out + ib * OSCAR4_BLOCK_BYTES);
    }
}

// Decoding runs for every cached row CPU flash attention reads: a loop over whole code bytes.
static void dequantize_block(const uint8_t * b, float * y) {
    const float d = oscar_half_to_float(oscar_block_scale(b));
    const uint8_t * qs = b + 2;
    float lut[16];
    for (int k = 0; k < 16; k++) lut[k] = d * oscar_levels4[k];
    for (int j = 0; j < 32; j++) {
        y[j]      = lut[qs[j] & 15];
        y[j + 32] = lut[qs[j] >> 4];
    }
}

#ifdef OSCAR_X86
OSCAR_AVX2 static void dequantize_block_avx2(const uint8_t * b, float * y) {
    float lut[16];
    const float d = oscar_scale_avx2(b);
    for (int k = 0; k < 16; k++) lut[k] = d * oscar_levels4[k];
    const __m256 lo = _mm256_loadu_ps(lut), hi = _mm256_loadu_ps(lut + 8);
    __m256i idx[8];
    oscar_codes4_avx2(b + 2, idx);
    for (int j = 0; j < 8; j++) _mm256_storeu_ps(y + 8 * j, oscar_lut16_avx2(idx[j], lo, hi));
}
#endif

void oscar_dequantize_row(int bits, const void * x, float * y, int64_t n) {
    if (bits == 2 || bits == 3) {
        (bits == 2 ? oscar2_dequantize_row : oscar3_dequantize_row)(x, y, n);
        return;
    }
    const uint8_t * in = (const uint8_t *) x;
#ifdef OSCAR_X86
    if (oscar_have_avx2()) {
        for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) dequantize_block_avx2(in + ib * OSCAR4_BLOCK_BYTES, y + ib * OSCAR_QK);
        return;
    }
#endif
    for (int64_t ib = 0; ib < n / OSCAR_QK; ib++) dequantize_block(in + ib * OSCAR4_BLOCK_BYTES, y + ib * OSCAR_QK);
}

void oscar4_quantize_row(const float * x, void * y, int64_t n) { oscar_quantize_row(4, x, y, n); }
void oscar4_dequantize_row(const void * x, float * y, int64_t n) { oscar_dequantize_row(4, x, y, n); }
size_t oscar4_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix) {
    (void) imatrix;  // KV data has no importance matrix
    oscar_quantize_row(4, src, dst, nrows * n_per_row);
    return (size_t) (nrows * n_per_row / OSCAR_QK) * OSCAR4_BLOCK_BYTES;
}
