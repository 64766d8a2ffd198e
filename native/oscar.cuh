// OScaR for ggml-cuda: block types, the cache-write quantizers, the element decoder that the patched
// set-rows.cu, cpy.cu, getrows.cu and convert.cu plug into their templates, and the flash-attention
// vec-kernel K.Q dot and V decoder (patches/0004). Include after common.cuh.
// The block math is oscar_block.h (oscar3, oscar4) and oscar_tcq_block.h (oscar2, the bitshift trellis), shared
// with the CPU, so both write identical bytes.
#pragma once

#include "oscar_block.h"
#include "oscar_tcq_block.h"
#include "oscar_tcq_codebook.h"

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

// ---- oscar3, oscar4: scalar Lloyd-Max codes -------------------------------------------------------------------

static __constant__ float oscar_levels3_dev[16] = { OSCAR_LEVELS3 };
static __constant__ float oscar_levels4_dev[16] = { OSCAR_LEVELS4 };

template <int B> static __device__ __forceinline__ const float * oscar_levels_dev() {
    static_assert(B == 3 || B == 4, "scalar codes: oscar3, oscar4");
    return B == 3 ? oscar_levels3_dev : oscar_levels4_dev;
}

// The codebook as compile-time constants: the decode paths below read levels from immediates, not memory.
constexpr float oscar_lv3[8]  = { OSCAR_LEVELS3 };
constexpr float oscar_lv4[16] = { OSCAR_LEVELS4 };
template <int B> __host__ __device__ constexpr float oscar_level(int c) {
    static_assert(B == 3 || B == 4, "scalar codes: oscar3, oscar4");
    return B == 3 ? oscar_lv3[c] : oscar_lv4[c];
}
template <int B> __host__ __device__ constexpr float oscar_level_unit() { return oscar_level<B>((1 << B) - 1) / 127.0f; }
__host__ __device__ constexpr int oscar_round(float x) { return x >= 0.0f ? int(x + 0.5f) : -int(-x + 0.5f); }

// F32 -> block, one thread per block (CPY of oscar3/oscar4).
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

// The same quantizer with one warp per block (elements l and l + 32 on lane l; SET_ROWS of oscar3/oscar4): the
// cache write of a decode step is a few short warps instead of one long serial thread per block. Same arithmetic as
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

// ---- oscar2: the bitshift trellis (format, encoder and conventions in oscar_tcq_block.h) ----------------------

// The codebook: a __device__ table (global memory through the caches; a __constant__ table would serialize the
// lanes' different indices), and a compile-time copy from which the int8 tables below are made.
static __device__ __align__(16) const float oscar_tcq_cb_dev[OSCAR_TCQ_STATES] = { OSCAR_TCQ_CODEBOOK };
constexpr float oscar_tcq_cb_c[OSCAR_TCQ_STATES] = { OSCAR_TCQ_CODEBOOK };

// Levels as int8 multiples of max|codebook| / 127 (K.Q by dp4a against an int8 query, as oscar3/oscar4 do):
// rounding moves each by at most 0.4 % of the largest, far below the code's own error (tests: test-backend-ops).
constexpr float oscar_tcq_absmax() {
    float m = 0.0f;
    for (int i = 0; i < OSCAR_TCQ_STATES; i++) m = oscar_tcq_cb_c[i] > m ? oscar_tcq_cb_c[i] : -oscar_tcq_cb_c[i] > m ? -oscar_tcq_cb_c[i] : m;
    return m;
}
constexpr float oscar_tcq_unit = oscar_tcq_absmax() / 127.0f;
constexpr uint8_t oscar_tcq_level8(int w) { return uint8_t(int8_t(oscar_round(oscar_tcq_cb_c[w & (OSCAR_TCQ_STATES - 1)] / oscar_tcq_unit))); }

// Two consecutive elements j, j + 1 have the windows at stream bits 2j and 2j + 2: the 10 bits from 2j hold both.
// pairs[i] = (level8 of window i & 255) | (level8 of window i >> 2) << 8: one 16-bit lookup for two int8 levels.
#define OSCAR_TCQ_PAIRS (4 * OSCAR_TCQ_STATES)
struct oscar_tcq_level8_table { uint8_t v[OSCAR_TCQ_STATES]; };
struct oscar_tcq_pair8_table  { uint16_t v[OSCAR_TCQ_PAIRS]; };
constexpr oscar_tcq_level8_table oscar_tcq_make_level8() {
    oscar_tcq_level8_table t{};
    for (int w = 0; w < OSCAR_TCQ_STATES; w++) t.v[w] = oscar_tcq_level8(w);
    return t;
}
constexpr oscar_tcq_pair8_table oscar_tcq_make_pair8() {
    oscar_tcq_pair8_table t{};
    for (int i = 0; i < OSCAR_TCQ_PAIRS; i++) t.v[i] = uint16_t(oscar_tcq_level8(i) | oscar_tcq_level8(i >> 2) << 8);
    return t;
}
static __device__ __align__(16) const oscar_tcq_level8_table oscar_tcq_level8_dev = oscar_tcq_make_level8();
static __device__ __align__(16) const oscar_tcq_pair8_table  oscar_tcq_pair8_dev  = oscar_tcq_make_pair8();

// Bits 2j .. 2j + 15 of a block's circular stream (j % 4 == 0): two code bytes, wrapping past byte 15. They hold
// the windows of elements j .. j + 3.
static __device__ __forceinline__ uint32_t oscar_tcq_bits16(const uint8_t * qs, const int j) {
    return (uint32_t) qs[j >> 2] | (uint32_t) qs[((j >> 2) + 1) & 15] << 8;
}

// The encoder, one warp per block. Identical bytes to oscar_tcq_quantize_block (CPU, scalar or AVX2) because:
//  - the norm, u = x 8 / ||x|| and the NaN / zero / Inf rules are oscar_tcq_prepare's steps in its order and in
//    double (oscar_tcq_prepare_warp below: the sum of squares serial in element order on every lane), and the bytes
//    and scale are oscar_tcq_pack's (its sum of the chosen values' squares serial in element order, on lane 0).
//    Double arithmetic is IEEE on the GPU (-use_fast_math touches float only) and a product of two floats is exact
//    in double, so a contracted DFMA, or adding a square computed apart, sums the same bits. One float detail: with
//    -ftz a float -> double conversion flushes a subnormal float to 0, so the conversions of x go through
//    oscar_f2d, which keeps it (the CPU's (double) x);
//  - the Viterbi costs are the same integers: vi = oscar_tcq_scaled(u) (rint of a double, the same bits), ci the
//    codebook scaled the same way, and oscar_tcq_branch's exact (vi - ci)^2 fused into the add of the old cost
//    (one IMAD: no float-to-int conversion, whose quarter-rate unit bound each Viterbi step);
//  - a state's new cost and back-pointer are oscar_tcq_pick, the CPU's comparison order (lowest c on ties), and the
//    first pass ends at the lowest k of least cost (oscar_tcq_last), the second at the overlap, as oscar_tcq_encode.
// Lane l keeps best[2l] and best[2l + 1]; their predecessors best[8l .. 8l + 7] (mod 64) are the survivors of lanes
// 4l .. 4l + 3 (mod 32): 8 shuffles a step. Back-pointers: 2 bits per state and step, a word per lane per 8 steps
// in shared memory. The trace-back follows the same pointers as the CPU's, in groups of 8 steps walked in parallel
// (oscar_tcq_entries), and the bytes are oscar_tcq_pack's with the serial sum of squares kept on one lane.
// A decode step writes few blocks, so a block's latency is the cost: about 2 x 64 steps of a shuffle and a
// three-deep add/min chain, the rest (norm, trace-backs, pack) made short.
struct oscar_tcq_scratch {
    double   u[OSCAR_QK];            // u = x 8 / ||x|| (oscar_tcq_prepare); then the chosen values' squares
    float    x[OSCAR_QK];            // the block's floats
    int32_t  v[OSCAR_QK];            // oscar_tcq_scaled(u)
    uint32_t back[OSCAR_QK / 8][WARP_SIZE];
    uint8_t  entry[OSCAR_QK / 8][OSCAR_TCQ_LINKS];  // see oscar_tcq_entries
    uint8_t  w[OSCAR_QK];            // the windows of the second pass
    uint8_t  out[sizeof(block_oscar2)];
};

// (double) x as the CPU converts it, subnormal floats included.
static __device__ __forceinline__ double oscar_f2d(const float x) {
    const uint32_t b = __float_as_uint(x);
    if (b & 0x7f800000u) {
        return (double) x;  // normal, Inf or NaN: nothing to flush
    }
    const double m = (double) (b & 0x7fffffu) * 0x1p-149;  // zero or subnormal: mantissa x 2^-149, exact
    return b >> 31 ? -m : m;
}

// oscar_tcq_prepare for the block in sm.x, by the whole warp: returns 1 with *norm = ||x|| and sm.u (u = x 8 / ||x||),
// or 0 with sm.out the block's 18 bytes (NaN or zero scale, zero codes). Every lane sums the squares itself, in
// element order, so all hold the same bits.
static __device__ int oscar_tcq_prepare_warp(oscar_tcq_scratch & sm, double * norm) {
    const int l = threadIdx.x % WARP_SIZE;
    int    nan = 0;
    double ss  = 0.0;  // oscar_block_sumsq
#pragma unroll 8
    for (int i = 0; i < OSCAR_QK; i++) {
        const float  xi = oscar_clamp_inf(sm.x[i]);
        const double xd = oscar_f2d(xi);
        nan |= isnan(xi);
        ss += xd * xd;
    }
    if (nan || !(ss > 0.0)) {
        if (l < (int) sizeof(block_oscar2)) {
            const uint16_t d = nan ? OSCAR_FP16_NAN : 0;
            sm.out[l] = l == 0 ? (uint8_t) (d & 0xff) : l == 1 ? (uint8_t) (d >> 8) : 0;
        }
        return 0;
    }
    *norm = sqrt(ss);
    const double inv = 8.0 / *norm;  // sqrt(64) / ||x||
    sm.u[l]      = oscar_f2d(oscar_clamp_inf(sm.x[l]))      * inv;
    sm.u[l + 32] = oscar_f2d(oscar_clamp_inf(sm.x[l + 32])) * inv;
    return 1;
}

// One state's update, as oscar_tcq_viterbi: a0..a3 the costs through c = 0..3; the least (lowest c on ties) and c.
static __device__ __forceinline__ int32_t oscar_tcq_pick(const int32_t a0, const int32_t a1, const int32_t a2, const int32_t a3, int & c) {
    const int32_t m01 = a1 < a0 ? a1 : a0, m23 = a3 < a2 ? a3 : a2;
    const bool    hi  = m23 < m01;
    c = hi ? 2 + (a3 < a2) : (a1 < a0);
    return hi ? m23 : m01;
}

// One Viterbi pass over v[(j + rot) % 64] (oscar_tcq_viterbi; overlap < 0: free, else constrained). Returns the
// pass's last k (the high L - 2 bits of its last state), uniform across the warp; back-pointers in sm.back.
static __device__ __forceinline__ int oscar_tcq_warp_pass(oscar_tcq_scratch & sm, const int32_t (&cs)[8], const int rot, const int overlap) {
    static_assert(OSCAR_TCQ_L == 8 && OSCAR_TCQ_LINKS == 2 * WARP_SIZE, "warp Viterbi: 64 survivors, two per lane");
    const int l = threadIdx.x % WARP_SIZE;
    int32_t b0 = overlap < 0 || 2 * l     == overlap ? 0 : OSCAR_TCQ_FAR;
    int32_t b1 = overlap < 0 || 2 * l + 1 == overlap ? 0 : OSCAR_TCQ_FAR;
#pragma unroll 1
    for (int wd = 0; wd < OSCAR_QK / 8; wd++) {
        uint32_t nib = 0;
#pragma unroll
        for (int s = 0; s < 8; s++) {
            const int32_t v = sm.v[(8 * wd + s + rot) & (OSCAR_QK - 1)];
            int32_t p[8];  // p[t] = old best[(8l + t) % 64]
#pragma unroll
            for (int t = 0; t < 4; t++) {
                p[2 * t]     = __shfl_sync(0xFFFFFFFF, b0, (4 * l + t) & (WARP_SIZE - 1));
                p[2 * t + 1] = __shfl_sync(0xFFFFFFFF, b1, (4 * l + t) & (WARP_SIZE - 1));
            }
            int c0, c1;  // state k = 2l reaches through codebook[8l + c], k = 2l + 1 through codebook[8l + 4 + c]
            b0 = oscar_tcq_pick(p[0] + oscar_tcq_branch(v, cs[0]), p[1] + oscar_tcq_branch(v, cs[1]),
                                p[2] + oscar_tcq_branch(v, cs[2]), p[3] + oscar_tcq_branch(v, cs[3]), c0);
            b1 = oscar_tcq_pick(p[4] + oscar_tcq_branch(v, cs[4]), p[5] + oscar_tcq_branch(v, cs[5]),
                                p[6] + oscar_tcq_branch(v, cs[6]), p[7] + oscar_tcq_branch(v, cs[7]), c1);
            nib |= (uint32_t) (c0 | c1 << 2) << (4 * s);
        }
        sm.back[wd][l] = nib;
    }
    if (overlap >= 0) {
        return overlap;
    }
    // the lowest k of least best[k]: the least value, then the first lane holding it (k = 2l before 2l + 1)
    int32_t m = min(b0, b1);
#pragma unroll
    for (int off = WARP_SIZE / 2; off > 0; off >>= 1) m = min(m, __shfl_xor_sync(0xFFFFFFFF, m, off, WARP_SIZE));
    const int first = __ffs(__ballot_sync(0xFFFFFFFF, b0 == m || b1 == m)) - 1;
    return __shfl_sync(0xFFFFFFFF, b0 == m ? 2 * l : 2 * l + 1, first);
}

// Back-pointer c of state (k, step j) of the last pass.
static __device__ __forceinline__ int oscar_tcq_back(const oscar_tcq_scratch & sm, const int j, const int k) {
    return (sm.back[j >> 3][k >> 1] >> (4 * (j & 7) + 2 * (k & 1))) & 3;
}

// The trace-back cut into groups g of 8 steps (8g .. 8g + 7): entry[g][k] = the k (high L - 2 bits) before step 8g
// of the best path that leaves step 8g + 7 in k, for groups g0..7 and every k, each lane walking its two k through
// every group (16 independent chains of 8 pointers instead of one chain of 64).
static __device__ __forceinline__ void oscar_tcq_entries(oscar_tcq_scratch & sm, const int g0) {
    const int l = threadIdx.x % WARP_SIZE;
#pragma unroll
    for (int g = g0; g < OSCAR_QK / 8; g++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int k = 2 * l + h;
#pragma unroll
            for (int s = 7; s >= 0; s--) k = (k << 2 | oscar_tcq_back(sm, 8 * g + s, k)) & (OSCAR_TCQ_LINKS - 1);
            sm.entry[g][2 * l + h] = (uint8_t) k;
        }
    }
}

// Quantize the 64 floats at x (contiguous) into the 18 bytes at out (2-byte aligned): the whole warp calls this.
static __device__ void oscar_tcq_quantize_warp(const float * __restrict__ x, uint8_t * __restrict__ out, oscar_tcq_scratch & sm) {
    const int l = threadIdx.x % WARP_SIZE;
    sm.x[l]      = x[l];
    sm.x[l + 32] = x[l + 32];
    __syncwarp();
    double norm = 0.0;
    if (oscar_tcq_prepare_warp(sm, &norm)) {  // uniform: every lane computed the same sum
        __syncwarp();
        sm.v[l]      = oscar_tcq_scaled(sm.u[l]);
        sm.v[l + 32] = oscar_tcq_scaled(sm.u[l + 32]);
        int32_t cs[8];  // the codebook entries of this lane's branches, scaled as oscar_tcq_scaled_codebook
#pragma unroll
        for (int t = 0; t < 8; t++) cs[t] = oscar_tcq_scaled(oscar_tcq_cb_dev[8 * l + t]);
        __syncwarp();
        // first pass on the row turned by half a block: the overlap the seam wants is path[32] & (LINKS - 1), the k
        // before step 32 on the path traced back from the pass's end
        int k = oscar_tcq_warp_pass(sm, cs, OSCAR_QK / 2, -1);
        __syncwarp();
        oscar_tcq_entries(sm, OSCAR_QK / 16);
        __syncwarp();
        k = sm.entry[4][sm.entry[5][sm.entry[6][sm.entry[7][k]]]];
        __syncwarp();
        // second pass, constrained to that overlap, traced back into the windows: lane g < 8 finds the k leaving its
        // group (a lookup per later group), then walks the group's 8 steps
        k = oscar_tcq_warp_pass(sm, cs, 0, k);
        __syncwarp();
        oscar_tcq_entries(sm, 0);
        __syncwarp();
        if (l < OSCAR_QK / 8) {
            for (int g = OSCAR_QK / 8 - 1; g > l; g--) k = sm.entry[g][k];
#pragma unroll
            for (int s = 7; s >= 0; s--) {
                const int j = 8 * l + s, w = k << 2 | oscar_tcq_back(sm, j, k);
                sm.w[j] = (uint8_t) w;
                k = w & (OSCAR_TCQ_LINKS - 1);
            }
        }
        __syncwarp();
        // oscar_tcq_pack: the code bytes (stream bits 2j, 2j + 1 = w_j & 3), the squares of the chosen values (exact in
        // double), summed in element order by lane 0, and the scale
        const double c0 = oscar_tcq_cb_dev[sm.w[l]], c1 = oscar_tcq_cb_dev[sm.w[l + 32]];
        sm.u[l]      = c0 * c0;
        sm.u[l + 32] = c1 * c1;
        if (l < OSCAR_QK / 4) {
            const uint8_t * w = sm.w + 4 * l;
            sm.out[2 + l] = (uint8_t) ((w[0] & 3) | (w[1] & 3) << 2 | (w[2] & 3) << 4 | (w[3] & 3) << 6);
        }
        __syncwarp();
        if (l == 0) {
            double lv2 = 0.0;
#pragma unroll 16
            for (int j = 0; j < OSCAR_QK; j++) lv2 += sm.u[j];
            const uint16_t d = oscar_scale_bits(norm, lv2);
            sm.out[0] = (uint8_t) (d & 0xff);
            sm.out[1] = (uint8_t) (d >> 8);
        }
    }
    __syncwarp();
    if (l < (int) sizeof(block_oscar2) / 2) {
        ((uint16_t *) out)[l] = (uint16_t) (sm.out[2 * l] | sm.out[2 * l + 1] << 8);
    }
    __syncwarp();  // sm is reused by the warp's next block
}

// CPY F32 -> oscar2 (K-shift): cpy.cu's cpy_f32_q with a warp per block (same element and destination offsets).
// Templates, so that only cpy.cu compiles them.
template <int B>
static __global__ void k_cpy_f32_oscar_warp(const char * cx, char * cdst, const int64_t ne,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
        const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
        const int64_t nb12, const int64_t nb13) {
    static_assert(B == 2, "the warp encoder is oscar2's");
    __shared__ oscar_tcq_scratch sm;  // blocks of one warp (cpy_f32_oscar_warp_cuda)
    const int64_t i = (int64_t) blockIdx.x * QK_OSCAR;
    if (i >= ne) {
        return;  // the whole warp
    }
    const int64_t i03 = i/(ne00 * ne01 * ne02);
    const int64_t i02 = (i - i03*ne00*ne01*ne02 )/ (ne00*ne01);
    const int64_t i01 = (i - i03*ne00*ne01*ne02  -  i02*ne01*ne00) / ne00;
    const int64_t i00 = i - i03*ne00*ne01*ne02 - i02*ne01*ne00 - i01*ne00;
    const int64_t x_offset = i00*nb00 + i01*nb01 + i02*nb02 + i03 * nb03;

    const int64_t i13 = i/(ne10 * ne11 * ne12);
    const int64_t i12 = (i - i13*ne10*ne11*ne12) / (ne10*ne11);
    const int64_t i11 = (i - i13*ne10*ne11*ne12 - i12*ne10*ne11) / ne10;
    const int64_t i10 = i - i13*ne10*ne11*ne12 - i12*ne10*ne11 - i11*ne10;
    const int64_t dst_offset = (i10/QK_OSCAR)*nb10 + i11*nb11 + i12*nb12 + i13*nb13;

    oscar_tcq_quantize_warp((const float *) (cx + x_offset), (uint8_t *) (cdst + dst_offset), sm);
}

template <int B>
static void cpy_f32_oscar_warp_cuda(const char * cx, char * cdst, const int64_t ne,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
        const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
        const int64_t nb12, const int64_t nb13, cudaStream_t stream) {
    GGML_ASSERT(ne % QK_OSCAR == 0 && nb00 == sizeof(float));
    // one warp a CUDA block: the Viterbi's shuffles are an SM-wide unit, so its warps are spread over the SMs
    k_cpy_f32_oscar_warp<B><<<ne / QK_OSCAR, WARP_SIZE, 0, stream>>>(cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12,
                                                       nb10, nb11, nb12, nb13);
}

// ---- SET_ROWS F32 -> OScaR ------------------------------------------------------------------------------------

// Warp w of the grid quantizes 64-element block w of src0 into row src1[...] of dst.
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
    const float * x   = src0 + i01 * s01 + i02 * s02 + i03 * s03 + i00 * QK_OSCAR;
    uint8_t     * out = (uint8_t *) dst + row * nb1 + i02 * nb2 + i03 * nb3 + i00 * sizeof(block_oscar<B>);
    if constexpr (B == 2) {
        __shared__ oscar_tcq_scratch sm;  // blocks of one warp (set_rows_cuda_oscar)
        oscar_tcq_quantize_warp(x, out, sm);
    } else {
        quantize_f32_oscar_block_warp<B>(x, out);
    }
}

template <typename idx_t>
static void set_rows_cuda_oscar(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_ASSERT(src0->ne[0] % QK_OSCAR == 0);
    const int64_t nbr = src0->ne[0] / QK_OSCAR, nblocks = nbr * ggml_nrows(src0);
    if (nblocks == 0) {
        return;
    }
    // oscar2: one warp a CUDA block (the warp Viterbi's shuffles are an SM-wide unit: a decode step's few blocks go
    // to as many SMs); oscar3/4: four
    const int     threads = dst->type == GGML_TYPE_OSCAR2 ? WARP_SIZE : 4 * WARP_SIZE;
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

// ---- decoding ----------------------------------------------------------------------------------------------------

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
// oscar2: scale x codebook[window], the CPU's float multiply (oscar_tcq_value), so the values are the CPU's bits.
template <int B> static __device__ __forceinline__ void dequantize_oscar(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const uint8_t * b = (const uint8_t *) vx + ib * sizeof(block_oscar<B>);
    const float     d = __half2float(__ushort_as_half(oscar_block_scale(b)));
    if constexpr (B == 2) {
        v.x = oscar_tcq_value(oscar_tcq_cb_dev, d, b + 2, iqs);
        v.y = oscar_tcq_value(oscar_tcq_cb_dev, d, b + 2, iqs + 32);
    } else {
        v.x = d * oscar_level_of<B>(oscar_code(B, b + 2, iqs));
        v.y = d * oscar_level_of<B>(oscar_code(B, b + 2, iqs + 32));
    }
}

// Flash attention, vec kernel (decode); the MMA kernel (prefill) reads K/V through the converters above.
// oscar3/oscar4: codes of the 4 consecutive elements i..i+3 (i % 4 == 0) of one block, one per byte: the strided
// layout keeps them in 4 consecutive bytes, so this is one 4-byte load (blocks are 2-byte aligned) and a mask.
template <int B> static __device__ __forceinline__ uint32_t oscar_codes4(const uint8_t * qs, const int i) {
    uint32_t w;
    if constexpr (B == 4) {
        ggml_cuda_memcpy_1<sizeof(int), 2>(&w, qs + i % 32);
        return (w >> (4 * (i / 32))) & 0x0F0F0F0F;
    } else {
        static_assert(B == 3, "oscar2 has no codes (trellis)");
        ggml_cuda_memcpy_1<sizeof(int), 2>(&w, qs + i % 16);
        w = (w >> (2 * (i / 16))) & 0x03030303;
        uint32_t h;
        ggml_cuda_memcpy_1<sizeof(int), 2>(&h, qs + 16 + i % 8);
        w |= ((h >> (i / 8)) & 0x01010101) << 2;
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
    if constexpr (B == 3) {
        return __byte_perm(w0, w1, sel);
    } else {  // look up both halves of the codebook, then pick by each code's top bit
        constexpr uint32_t w2 = oscar_lut_word<B, bias>(2), w3 = oscar_lut_word<B, bias>(3);
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

// The int8 levels (oscar_tcq_level8) of elements j .. j + 3 of an oscar2 block (j % 4 == 0), one per byte. The
// 256-byte table spans two cache lines, so a warp's scattered lookups cost at most two L1 wavefronts each (the
// 2 KB pair table would cost up to 16).
static __device__ __forceinline__ uint32_t oscar_tcq_levels4(const uint8_t * qs, const int j) {
    const uint32_t  s = oscar_tcq_bits16(qs, j);
    const uint8_t * t = oscar_tcq_level8_dev.v;
    const uint32_t l0 = __ldg(t + (s & 0xFF)), l1 = __ldg(t + ((s >> 2) & 0xFF));
    const uint32_t l2 = __ldg(t + ((s >> 4) & 0xFF)), l3 = __ldg(t + ((s >> 6) & 0xFF));
    return __byte_perm(l0 | l1 << 8, l2 | l3 << 8, 0x5410);
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
        int k8;
        if constexpr (B == 2) {
            k8 = oscar_tcq_levels4(b + 2, e % QK_OSCAR);
        } else {
            k8 = oscar_lookup4<B, 0>(oscar_codes4<B>(b + 2, e % QK_OSCAR));
        }
        const int s  = ggml_cuda_dp4a(k8, Q_q8[k_KQ_0/nthreads], 0);
        const float2 Q_ds = ((const float2 *) Q_ds_v)[k_KQ_0/nthreads];
        sum += __half2float(__ushort_as_half(oscar_block_scale(b))) * Q_ds.x * float(s);
    }
    if constexpr (B == 2) {
        return sum * oscar_tcq_unit;
    } else {
        constexpr float unit = oscar_level_unit<B>();
        return sum * unit;
    }
}

// V: ne (2 or 4) consecutive decoded values from element i0 of a cached row.
template <typename T, int ne, int B>
static __device__ __forceinline__ void dequantize_V_oscar(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    const uint8_t * b = (const uint8_t *) vx + (i0 / QK_OSCAR) * sizeof(block_oscar<B>);
    const int       i = i0 % QK_OSCAR;
    if constexpr (B == 2) {  // int8 levels (oscar_tcq_level8) x scale x unit; i % 4 + ne <= 4
        const float    d = __half2float(__ushort_as_half(oscar_block_scale(b))) * oscar_tcq_unit;
        const uint32_t s = oscar_tcq_bits16(b + 2, i & ~3) >> (2 * (i & 3));
        float f[ne];
#pragma unroll
        for (int l = 0; l < ne; l++) f[l] = d * (float) (int8_t) __ldg(oscar_tcq_level8_dev.v + ((s >> (2 * l)) & (OSCAR_TCQ_STATES - 1)));
        if constexpr (std::is_same_v<T, half>) {
#pragma unroll
            for (int l = 0; l < ne; l += 2) ((half2 *) dst)[l / 2] = __floats2half2_rn(f[l], f[l + 1]);
        } else {
#pragma unroll
            for (int l = 0; l < ne; l++) ((float *) dst)[l] = f[l];
        }
        return;
    } else {
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
}
