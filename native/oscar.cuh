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

// The codebook as compile-time constants: the decode paths below read levels from immediates, not memory.
constexpr float oscar_lv2[4]  = { OSCAR_LEVELS2 };
constexpr float oscar_lv3[8]  = { OSCAR_LEVELS3 };
constexpr float oscar_lv4[16] = { OSCAR_LEVELS4 };
template <int B> __host__ __device__ constexpr float oscar_level(int c) { return B == 2 ? oscar_lv2[c] : B == 3 ? oscar_lv3[c] : oscar_lv4[c]; }
template <int B> __host__ __device__ constexpr float oscar_level_unit() { return oscar_level<B>((1 << B) - 1) / 127.0f; }
__host__ __device__ constexpr int oscar_round(float x) { return x >= 0.0f ? int(x + 0.5f) : -int(-x + 0.5f); }

// F32 -> block, one thread per block (SET_ROWS, CPY).
template <int B> static __device__ void quantize_f32_oscar_block(const float * __restrict__ x, block_oscar<B> * __restrict__ y) {
    uint8_t tmp[sizeof(block_oscar<B>)];  // local copy: the shared routine works on bytes, blocks are only 2-byte aligned
    oscar_quantize_block(B, oscar_levels_dev<B>(), x, tmp);
    uint8_t * out = (uint8_t *) y;
#pragma unroll
    for (int i = 0; i < (int) sizeof(block_oscar<B>); i++) out[i] = tmp[i];
}

template <int B> static __device__ void cpy_blck_f32_oscar(const char * cxi, char * cdsti) {
    quantize_f32_oscar_block<B>((const float *) cxi, (block_oscar<B> *) cdsti);
}

// The same quantizer with one warp per block (elements l and l + 32 on lane l): the cache write of a decode
// step is a few short warps instead of one long serial thread per block. Same arithmetic as
// oscar_quantize_block (norm and thresholds in double); the sums are tree reductions, which can differ from
// the serial sum only in the last bits of a double (test-backend-ops SET_ROWS compares with the CPU).
static __device__ __forceinline__ double oscar_warp_sum(double v) {
#pragma unroll
    for (int off = WARP_SIZE / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFF, v, off, WARP_SIZE);
    return v;
}

template <int B> static __device__ void quantize_f32_oscar_block_warp(const float * __restrict__ x, uint8_t * __restrict__ out) {
    const int   l  = threadIdx.x % WARP_SIZE;
    const float x0 = oscar_clamp_inf(x[l]), x1 = oscar_clamp_inf(x[l + 32]);
    const bool  nan = __any_sync(0xFFFFFFFF, isnan(x0) || isnan(x1));
    const double ss = oscar_warp_sum((double) x0 * x0 + (double) x1 * x1);
    const float * levels = oscar_levels_dev<B>();
    int c0 = 0, c1 = 0;
    uint16_t d = 0;
    if (nan) {
        d = OSCAR_FP16_NAN;
    } else if (ss > 0.0) {
        const double norm = sqrt(ss), inv = 8.0 / norm;
        const double u0 = (double) x0 * inv, u1 = (double) x1 * inv;
#pragma unroll
        for (int k = 0; k < (1 << B) - 1; k++) {
            const double thr = oscar_threshold(levels, k);
            c0 += u0 > thr;
            c1 += u1 > thr;
        }
        const double lv2 = oscar_warp_sum((double) levels[c0] * levels[c0] + (double) levels[c1] * levels[c1]);
        d = oscar_scale_bits(norm, lv2);
    }
    uint8_t * qs = out + 2;  // layout in oscar.h
    if constexpr (B == 4) {
        qs[l] = (uint8_t) (c0 | (c1 << 4));
    } else {
        const int p0 = __shfl_down_sync(0xFFFFFFFF, c0 & 3, 16), p1 = __shfl_down_sync(0xFFFFFFFF, c1 & 3, 16);
        if (l < 16) qs[l] = (uint8_t) ((c0 & 3) | (p0 << 2) | ((c1 & 3) << 4) | (p1 << 6));
        if constexpr (B == 3) {  // high bits: byte i, bit k <- element i + 8k
            const uint32_t h0 = __ballot_sync(0xFFFFFFFF, c0 >> 2), h1 = __ballot_sync(0xFFFFFFFF, c1 >> 2);
            if (l < 8) {
                uint32_t b = 0;
#pragma unroll
                for (int k = 0; k < 8; k++) b |= ((k < 4 ? h0 >> (l + 8 * k) : h1 >> (l + 8 * k - 32)) & 1) << k;
                qs[16 + l] = (uint8_t) b;
            }
        }
    }
    if (l == 0) { out[0] = (uint8_t) (d & 0xff); out[1] = (uint8_t) (d >> 8); }
}

// SET_ROWS F32 -> OScaR: warp w of the grid quantizes 64-element block w of src0 into row src1[...] of dst.
template <typename idx_t, int B>
static __global__ void k_set_rows_oscar(const float * __restrict__ src0, const idx_t * __restrict__ src1, char * __restrict__ dst,
        const int64_t nblocks, const int64_t nbr, const int64_t ne01, const int64_t ne02, const int64_t ne11, const int64_t ne12,
        const int64_t s01, const int64_t s02, const int64_t s03, const int64_t s10, const int64_t s11, const int64_t s12,
        const int64_t nb1, const int64_t nb2, const int64_t nb3) {
    const int64_t ib = ((int64_t) blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (ib >= nblocks) {
        return;  // the whole warp
    }
    const int64_t i00 = ib % nbr, i01 = (ib / nbr) % ne01, i02 = (ib / nbr / ne01) % ne02, i03 = ib / nbr / ne01 / ne02;
    const int64_t row = src1[i01 * s10 + (i02 % ne11) * s11 + (i03 % ne12) * s12];
    quantize_f32_oscar_block_warp<B>(src0 + i01 * s01 + i02 * s02 + i03 * s03 + i00 * QK_OSCAR,
                                     (uint8_t *) dst + row * nb1 + i02 * nb2 + i03 * nb3 + i00 * sizeof(block_oscar<B>));
}

template <typename idx_t>
static void set_rows_cuda_oscar(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_ASSERT(src0->ne[0] % QK_OSCAR == 0);
    const int64_t nbr = src0->ne[0] / QK_OSCAR, nblocks = nbr * ggml_nrows(src0);
    if (nblocks == 0) {
        return;
    }
    constexpr int threads = 128;
    const int64_t grid = (nblocks * WARP_SIZE + threads - 1) / threads;
    const int64_t e0 = sizeof(float), e1 = sizeof(idx_t);
#define OSCAR_SET_ROWS(B) k_set_rows_oscar<idx_t, B><<<grid, threads, 0, stream>>>( \
        (const float *) src0->data, (const idx_t *) src1->data, (char *) dst->data, nblocks, nbr, src0->ne[1], src0->ne[2], \
        src1->ne[1], src1->ne[2], src0->nb[1] / e0, src0->nb[2] / e0, src0->nb[3] / e0, src1->nb[0] / e1, src1->nb[1] / e1, \
        src1->nb[2] / e1, dst->nb[1], dst->nb[2], dst->nb[3])
    switch (dst->type) {
        case GGML_TYPE_OSCAR2: OSCAR_SET_ROWS(2); break;
        case GGML_TYPE_OSCAR3: OSCAR_SET_ROWS(3); break;
        default:               OSCAR_SET_ROWS(4); break;
    }
#undef OSCAR_SET_ROWS
}

// Exact level of code c by a tree of selects over compile-time constants (no memory access, no divergence).
template <int B, int lo = 0, int n = (1 << B)> static __device__ __forceinline__ float oscar_level_of(const uint32_t c) {
    if constexpr (n == 1) {
        constexpr float level = oscar_level<B>(lo);
        return level;
    } else {
        return (c & (n / 2)) ? oscar_level_of<B, lo + n / 2, n / 2>(c) : oscar_level_of<B, lo, n / 2>(c);
    }
}

// Block ib, elements iqs and iqs + 32 (iqs < 32): the dequantize_kernel_t shape used by convert/getrows/cpy.
template <int B> static __device__ __forceinline__ void dequantize_oscar(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const uint8_t * b = (const uint8_t *) vx + ib * sizeof(block_oscar<B>);
    const float     d = __half2float(__ushort_as_half(oscar_block_scale(b)));
    v.x = d * oscar_level_of<B>(oscar_code(B, b + 2, iqs));
    v.y = d * oscar_level_of<B>(oscar_code(B, b + 2, iqs + 32));
}

// Flash attention, vec kernel (decode); the MMA kernel (prefill) reads K/V through the converters above.
// Codes of the 4 consecutive elements i..i+3 (i % 4 == 0) of one block, one per byte: the strided layout
// keeps them in 4 consecutive bytes, so this is one 4-byte load (blocks are 2-byte aligned) and a mask.
template <int B> static __device__ __forceinline__ uint32_t oscar_codes4(const uint8_t * qs, const int i) {
    uint32_t w;
    if constexpr (B == 4) {
        ggml_cuda_memcpy_1<sizeof(int), 2>(&w, qs + i % 32);
        return (w >> (4 * (i / 32))) & 0x0F0F0F0F;
    } else {
        ggml_cuda_memcpy_1<sizeof(int), 2>(&w, qs + i % 16);
        w = (w >> (2 * (i / 16))) & 0x03030303;
        if constexpr (B == 3) {
            uint32_t h;
            ggml_cuda_memcpy_1<sizeof(int), 2>(&h, qs + 16 + i % 8);
            w |= ((h >> (i / 8)) & 0x01010101) << 2;
        }
        return w;
    }
}

// The decode loop looks levels up with byte permutes from registers instead of memory: the codebook as
// int8 multiples of max|level| / 127 (K: dp4a against the q8_1 query), or offset by 128 (V: turned into
// halves by exponent bits). Rounding the levels to 1/127 of the largest moves each by at most 0.4 % of it,
// far below the format's own error (tests: test-backend-ops against the exact CPU path).
template <int B, int bias> __host__ __device__ constexpr uint32_t oscar_lut_word(int w) {
    uint32_t r = 0;
    for (int k = 0; k < 4 && 4*w + k < (1 << B); k++) {
        r |= uint32_t(uint8_t(oscar_round(oscar_level<B>(4*w + k) / oscar_level_unit<B>()) + bias)) << (8*k);
    }
    return r;
}

// 4 selector nibbles (low 16 bits; __byte_perm reads 3 bits of each) -> their 4 LUT bytes.
template <int B, int bias> static __device__ __forceinline__ uint32_t oscar_lookup_sel(const uint32_t sel) {
    constexpr uint32_t w0 = oscar_lut_word<B, bias>(0), w1 = oscar_lut_word<B, bias>(1);
    constexpr uint32_t w2 = oscar_lut_word<B, bias>(2), w3 = oscar_lut_word<B, bias>(3);
    if constexpr (B == 2) {
        return __byte_perm(w0, 0, sel);
    } else if constexpr (B == 3) {
        return __byte_perm(w0, w1, sel);
    } else {  // look up both halves of the codebook, then pick by each code's top bit
        const uint32_t lo = __byte_perm(w0, w1, sel);
        const uint32_t hi = __byte_perm(w2, w3, sel);
        return __byte_perm(lo, hi, 0x3210 | ((sel & 0x8888) >> 1));
    }
}

// 4 codes (one per byte) -> their 4 LUT bytes.
template <int B, int bias> static __device__ __forceinline__ uint32_t oscar_lookup4(const uint32_t codes) {
    return oscar_lookup_sel<B, bias>(__byte_perm(codes | (codes >> 4), 0, 0x0020));  // selector nibbles c0 c1 c2 c3
}

// Bytes 2 pair and 2 pair + 1 of u8 (level + 128 each) as exact half levels: halves with exponent bits 0x64 are
// 1024 + byte, so subtracting 1152 leaves the level (integers below 2048 are exact in half).
static __device__ __forceinline__ half2 oscar_level_pair_h2(const uint32_t u8, const int pair) {
    const uint32_t h = __byte_perm(u8, 0x64646464, 0x7170 + pair * 0x0202);
    return __hsub2(*(const half2 *) &h, __float2half2_rn(1152.0f));
}

// K.Q for one cached row: each thread takes 4 consecutive elements per step, Q arrives as q8_1 (ints + (d, sum)).
template <int D, int nthreads, int B>
static __device__ __forceinline__ float vec_dot_fattn_vec_KQ_oscar(
    const char * __restrict__ K_c, const void * __restrict__ Q_v, const int * __restrict__ Q_q8, const void * __restrict__ Q_ds_v) {
    GGML_UNUSED(Q_v);
    float sum = 0.0f;
#pragma unroll
    for (int k_KQ_0 = 0; k_KQ_0 < int(D/sizeof(int)); k_KQ_0 += nthreads) {
        const int k_KQ = k_KQ_0 + (nthreads == WARP_SIZE ? threadIdx.x : threadIdx.x % nthreads);
        const int e    = 4 * k_KQ;
        const uint8_t * b = (const uint8_t *) K_c + (e / QK_OSCAR) * sizeof(block_oscar<B>);
        const int k8 = oscar_lookup4<B, 0>(oscar_codes4<B>(b + 2, e % QK_OSCAR));
        const int s  = ggml_cuda_dp4a(k8, Q_q8[k_KQ_0/nthreads], 0);
        const float2 Q_ds = ((const float2 *) Q_ds_v)[k_KQ_0/nthreads];
        sum += __half2float(__ushort_as_half(oscar_block_scale(b))) * Q_ds.x * float(s);
    }
    constexpr float unit = oscar_level_unit<B>();
    return sum * unit;
}

// V: ne (2 or 4) consecutive decoded values from element i0 of a cached row.
template <typename T, int ne, int B>
static __device__ __forceinline__ void dequantize_V_oscar(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    const uint8_t * b = (const uint8_t *) vx + (i0 / QK_OSCAR) * sizeof(block_oscar<B>);
    const int       i = i0 % QK_OSCAR;
    constexpr float unit = oscar_level_unit<B>();
    const float     d = __half2float(__ushort_as_half(oscar_block_scale(b))) * unit;
    const uint32_t u8 = oscar_lookup4<B, 128>(oscar_codes4<B>(b + 2, i & ~3));  // level + 128 per byte
    if constexpr (std::is_same_v<T, half>) {
        const half2 d2 = __float2half2_rn(d);
        ((half2 *) dst)[0] = oscar_level_pair_h2(u8, (i & 2) / 2) * d2;
        if constexpr (ne == 4) {
            ((half2 *) dst)[1] = oscar_level_pair_h2(u8, 1) * d2;
        }
    } else {
#pragma unroll
        for (int l = 0; l < ne; l++) {
            ((float *) dst)[l] = d * float(int((u8 >> (8 * ((i & 3) + l))) & 0xFF) - 128);
        }
    }
}
