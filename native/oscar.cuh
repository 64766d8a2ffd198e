// OScaR for ggml-cuda: block types, the cache-write quantizer and the element decoder that the patched
// set-rows.cu, cpy.cu, getrows.cu and convert.cu plug into their existing templates (patches/0004).
// The block math is oscar_block.h, shared with the CPU, so both write identical bytes.
#pragma once

#include "oscar_block.h"

template <int B> struct block_oscar {
    uint16_t d;           // fp16 scale bits
    uint8_t  qs[8 * B];   // codes, layout in oscar.h
};
typedef block_oscar<2> block_oscar2;
typedef block_oscar<3> block_oscar3;
typedef block_oscar<4> block_oscar4;
static_assert(sizeof(block_oscar2) == 18 && sizeof(block_oscar3) == 26 && sizeof(block_oscar4) == 34, "OScaR block sizes");

#define QK_OSCAR 64
#define QR_OSCAR 2  // a decoder call yields elements iqs and iqs + 32

static __constant__ float oscar_levels2_dev[16] = { OSCAR_LEVELS2 };
static __constant__ float oscar_levels3_dev[16] = { OSCAR_LEVELS3 };
static __constant__ float oscar_levels4_dev[16] = { OSCAR_LEVELS4 };

template <int B> static __device__ __forceinline__ const float * oscar_levels_dev() {
    return B == 2 ? oscar_levels2_dev : B == 3 ? oscar_levels3_dev : oscar_levels4_dev;
}

// F32 -> block, one thread per block (SET_ROWS, CPY).
template <int B> static __device__ void quantize_f32_oscar_block(const float * __restrict__ x, block_oscar<B> * __restrict__ y) {
    uint8_t tmp[2 + 8 * B];  // local copy: the shared routine works on bytes, blocks are only 2-byte aligned
    oscar_quantize_block(B, oscar_levels_dev<B>(), x, tmp);
    uint8_t * out = (uint8_t *) y;
#pragma unroll
    for (int i = 0; i < 2 + 8 * B; i++) out[i] = tmp[i];
}

template <int B> static __device__ void cpy_blck_f32_oscar(const char * cxi, char * cdsti) {
    quantize_f32_oscar_block<B>((const float *) cxi, (block_oscar<B> *) cdsti);
}

// Block ib, elements iqs and iqs + 32 (iqs < 32): the dequantize_kernel_t shape used by convert/getrows/cpy.
template <int B> static __device__ __forceinline__ void dequantize_oscar(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const uint8_t * b = (const uint8_t *) vx + ib * (2 + 8 * B);
    const float     d = __half2float(__ushort_as_half(oscar_block_scale(b)));
    const float *   L = oscar_levels_dev<B>();
    v.x = d * L[oscar_code(B, b + 2, iqs)];
    v.y = d * L[oscar_code(B, b + 2, iqs + 32)];
}
