// OScaR for ggml-cuda: block types, the cache-write quantizer, the element decoder that the patched
// set-rows.cu, cpy.cu, getrows.cu and convert.cu plug into their templates, and the flash-attention
// vec-kernel K.Q dot and V decoder (patches/0004). Include after common.cuh.
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

// Flash attention, vec kernel (decode); the MMA kernel (prefill) reads K/V through the converters above.
// Codes of the 4 consecutive elements i..i+3 (i % 4 == 0) of one block, one per byte: the strided layout
// keeps them in 4 consecutive bytes, so this is one 4-byte load (blocks are 2-byte aligned) and a mask.
template <int B> static __device__ __forceinline__ int oscar_codes4(const uint8_t * qs, const int i) {
    int w;
    if constexpr (B == 4) {
        ggml_cuda_memcpy_1<sizeof(int), 2>(&w, qs + i % 32);
        return (w >> (4 * (i / 32))) & 0x0F0F0F0F;
    } else {
        ggml_cuda_memcpy_1<sizeof(int), 2>(&w, qs + i % 16);
        w = (w >> (2 * (i / 16))) & 0x03030303;
        if constexpr (B == 3) {
            int h;
            ggml_cuda_memcpy_1<sizeof(int), 2>(&h, qs + 16 + i % 8);
            w |= ((h >> (i / 8)) & 0x01010101) << 2;
        }
        return w;
    }
}

// K.Q for one cached row: each thread takes 4 consecutive elements per step, Q arrives as q8_1 (ints + (d, sum)).
template <int D, int nthreads, int B>
static __device__ __forceinline__ float vec_dot_fattn_vec_KQ_oscar(
    const char * __restrict__ K_c, const void * __restrict__ Q_v, const int * __restrict__ Q_q8, const void * __restrict__ Q_ds_v) {
    GGML_UNUSED(Q_v);
    const float * L = oscar_levels_dev<B>();
    float sum = 0.0f;
#pragma unroll
    for (int k_KQ_0 = 0; k_KQ_0 < int(D/sizeof(int)); k_KQ_0 += nthreads) {
        const int k_KQ = k_KQ_0 + (nthreads == WARP_SIZE ? threadIdx.x : threadIdx.x % nthreads);
        const int e    = 4 * k_KQ;
        const uint8_t * b = (const uint8_t *) K_c + (e / QK_OSCAR) * (2 + 8 * B);
        const int codes = oscar_codes4<B>(b + 2, e % QK_OSCAR);
        const int u     = Q_q8[k_KQ_0/nthreads];
        const uint8_t * c = (const uint8_t *) &codes;
        const int8_t  * q = (const int8_t *) &u;
        const float s = L[c[0]]*q[0] + L[c[1]]*q[1] + L[c[2]]*q[2] + L[c[3]]*q[3];
        const float2 Q_ds = ((const float2 *) Q_ds_v)[k_KQ_0/nthreads];
        sum += __half2float(__ushort_as_half(oscar_block_scale(b))) * Q_ds.x * s;
    }
    return sum;
}

// V: ne (2 or 4) consecutive decoded values from element i0 of a cached row.
template <typename T, int ne, int B>
static __device__ __forceinline__ void dequantize_V_oscar(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    const uint8_t * b = (const uint8_t *) vx + (i0 / QK_OSCAR) * (2 + 8 * B);
    const int       i = i0 % QK_OSCAR;
    const float     d = __half2float(__ushort_as_half(oscar_block_scale(b)));
    const float *   L = oscar_levels_dev<B>();
    const int codes = oscar_codes4<B>(b + 2, i & ~3);
    const uint8_t * c = (const uint8_t *) &codes;
#pragma unroll
    for (int l = 0; l < ne; l++) {
        const float v = d * L[c[(i & 3) + l]];
        if constexpr (std::is_same_v<T, half>) {
            ((half *) dst)[l] = __float2half(v);
        } else {
            ((float *) dst)[l] = v;
        }
    }
}
