// OScaR for ggml-cuda: block types, the cache-write quantizers, the element decoder that the patched
// set-rows.cu, cpy.cu, getrows.cu and convert.cu plug into their templates, and the flash-attention
// vec-kernel K.Q dot and V decoder (patches/0004). Include after common.cuh.
// The block math is oscar_tcq_block.h (oscar2, oscar3: the bitshift trellis) and oscar_block.h (oscar4), shared
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

__host__ __device__ constexpr int oscar_round(float x) { return x >= 0.0f ? int(x + 0.5f) : -int(-x + 0.5f); }

// ---- oscar4: the scalar Lloyd-Max code ----------------------------------------------------------------------------

static __constant__ float oscar_levels4_dev[16] = { OSCAR_LEVELS4 };

// The codebook as compile-time constants: the decode paths below read levels from immediates, not memory.
constexpr float oscar_lv4[16] = { OSCAR_LEVELS4 };
__host__ __device__ constexpr float oscar_level4(int c) { return oscar_lv4[c]; }
__host__ __device__ constexpr float oscar_level4_unit() { return oscar_level4(15) / 127.0f; }

// F32 -> block, one thread per block (CPY of oscar4; oscar2/oscar3 take the warp encoder below).
template <int B> static __device__ void cpy_blck_f32_oscar(const char * cxi, char * cdsti) {
    static_assert(B == 4, "one thread per block: oscar4");
    uint8_t tmp[sizeof(block_oscar4)];  // local copy: the shared routine works on bytes, blocks are only 2-byte aligned
    oscar_quantize_block(oscar_levels4_dev, (const float *) cxi, tmp);
#pragma unroll
    for (int i = 0; i < (int) sizeof(block_oscar4); i++) cdsti[i] = (char) tmp[i];
}

// The same quantizer with one warp per block (elements l and l + 32 on lane l; SET_ROWS of oscar4): the cache write
// of a decode step is a few short warps instead of one long serial thread per block. Same arithmetic as
// oscar_quantize_block (norm and thresholds in double); the sums are tree reductions, which can differ from
// the serial sum only in the last bits of a double (test-backend-ops SET_ROWS compares with the CPU).
static __device__ __forceinline__ double oscar_warp_sum(double v) {
#pragma unroll
    for (int off = WARP_SIZE / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFF, v, off, WARP_SIZE);
    return v;
}

static __device__ void quantize_f32_oscar4_block_warp(const float * __restrict__ x, uint8_t * __restrict__ out) {
    const int   l  = threadIdx.x % WARP_SIZE;
    const float x0 = oscar_clamp_inf(x[l]), x1 = oscar_clamp_inf(x[l + 32]);
    const bool  nan = __any_sync(0xFFFFFFFF, isnan(x0) || isnan(x1));
    const double ss = oscar_warp_sum((double) x0 * x0 + (double) x1 * x1);
    int c0 = 0, c1 = 0;
    uint16_t d = 0;
    if (nan) {
        d = OSCAR_FP16_NAN;
    } else if (ss > 0.0) {
        const double norm = sqrt(ss), inv = 8.0 / norm;
        const double u0 = (double) x0 * inv, u1 = (double) x1 * inv;
#pragma unroll
        for (int k = 0; k < 15; k++) {
            const double thr = oscar_threshold(oscar_levels4_dev, k);
            c0 += u0 > thr;
            c1 += u1 > thr;
        }
        const double lv2 = oscar_warp_sum((double) oscar_levels4_dev[c0] * oscar_levels4_dev[c0] +
                                          (double) oscar_levels4_dev[c1] * oscar_levels4_dev[c1]);
        d = oscar_scale_bits(norm, lv2);
    }
    out[2 + l] = (uint8_t) (c0 | (c1 << 4));  // layout in oscar.h
    if (l == 0) { out[0] = (uint8_t) (d & 0xff); out[1] = (uint8_t) (d >> 8); }
}

// ---- oscar2, oscar3: the bitshift trellis (format, encoder and conventions in oscar_tcq_block.h) ------------------
// S below is the bits per element (2: oscar2, 3: oscar3), as the header's s.

// The codebooks: __device__ tables (global memory through the caches; a __constant__ table would serialize the
// lanes' different indices), and compile-time copies from which the int8 tables below are made.
static __device__ __align__(16) const float oscar_tcq2_cb_dev[OSCAR_TCQ_STATES] = { OSCAR_TCQ2_CODEBOOK };
static __device__ __align__(16) const float oscar_tcq3_cb_dev[OSCAR_TCQ_STATES] = { OSCAR_TCQ3_CODEBOOK };
template <int S> static __device__ __forceinline__ const float * oscar_tcq_cb_dev() {
    static_assert(S == 2 || S == 3, "trellis codes: oscar2, oscar3");
    return S == 2 ? oscar_tcq2_cb_dev : oscar_tcq3_cb_dev;
}
constexpr float oscar_tcq2_cb_c[OSCAR_TCQ_STATES] = { OSCAR_TCQ2_CODEBOOK };
constexpr float oscar_tcq3_cb_c[OSCAR_TCQ_STATES] = { OSCAR_TCQ3_CODEBOOK };
template <int S> constexpr float oscar_tcq_cb_c(int w) { return S == 2 ? oscar_tcq2_cb_c[w] : oscar_tcq3_cb_c[w]; }

// Levels as int8 multiples of max|codebook| / 127 (K.Q by dp4a against an int8 query, as oscar4 does): rounding
// moves each by at most 0.4 % of the largest, far below the code's own error (tests: test-backend-ops).
template <int S> constexpr float oscar_tcq_absmax() {
    float m = 0.0f;
    for (int i = 0; i < OSCAR_TCQ_STATES; i++) {
        const float c = oscar_tcq_cb_c<S>(i);
        m = c > m ? c : -c > m ? -c : m;
    }
    return m;
}
constexpr float oscar_tcq2_unit = oscar_tcq_absmax<2>() / 127.0f, oscar_tcq3_unit = oscar_tcq_absmax<3>() / 127.0f;
template <int S> __host__ __device__ constexpr float oscar_tcq_unit() { return S == 2 ? oscar_tcq2_unit : oscar_tcq3_unit; }
template <int S> constexpr uint8_t oscar_tcq_level8(int w) {
    return uint8_t(int8_t(oscar_round(oscar_tcq_cb_c<S>(w & (OSCAR_TCQ_STATES - 1)) / oscar_tcq_unit<S>())));
}

// Two consecutive elements j, j + 1 have the windows at stream bits Sj and Sj + S: the S + 8 bits from Sj hold
// both. pairs[i] = (level8 of window i & 255) | (level8 of window i >> S) << 8: one 16-bit lookup for two levels.
#define OSCAR_TCQ_PAIRS(s) (OSCAR_TCQ_STATES << (s))
struct oscar_tcq_level8_table { uint8_t v[OSCAR_TCQ_STATES]; };
template <int S> struct oscar_tcq_pair8_table { uint16_t v[OSCAR_TCQ_PAIRS(S)]; };
template <int S> constexpr oscar_tcq_level8_table oscar_tcq_make_level8() {
    oscar_tcq_level8_table t{};
    for (int w = 0; w < OSCAR_TCQ_STATES; w++) t.v[w] = oscar_tcq_level8<S>(w);
    return t;
}
template <int S> constexpr oscar_tcq_pair8_table<S> oscar_tcq_make_pair8() {
    oscar_tcq_pair8_table<S> t{};
    for (int i = 0; i < OSCAR_TCQ_PAIRS(S); i++) t.v[i] = uint16_t(oscar_tcq_level8<S>(i) | oscar_tcq_level8<S>(i >> S) << 8);
    return t;
}
static __device__ __align__(16) const oscar_tcq_level8_table   oscar_tcq2_level8_dev = oscar_tcq_make_level8<2>();
static __device__ __align__(16) const oscar_tcq_level8_table   oscar_tcq3_level8_dev = oscar_tcq_make_level8<3>();
static __device__ __align__(16) const oscar_tcq_pair8_table<2> oscar_tcq2_pair8_dev  = oscar_tcq_make_pair8<2>();
static __device__ __align__(16) const oscar_tcq_pair8_table<3> oscar_tcq3_pair8_dev  = oscar_tcq_make_pair8<3>();
template <int S> static __device__ __forceinline__ const uint8_t * oscar_tcq_level8_dev() {
    return S == 2 ? oscar_tcq2_level8_dev.v : oscar_tcq3_level8_dev.v;
}
template <int S> static __device__ __forceinline__ const uint16_t * oscar_tcq_pair8_dev() {
    if constexpr (S == 2) {
        return oscar_tcq2_pair8_dev.v;
    } else {
        return oscar_tcq3_pair8_dev.v;
    }
}

// Stream bits Sj .. Sj + 3S + 7 of a block's code bytes from bit 0 up (j % 4 == 0): the windows of elements
// j .. j + 3, element j + k at bit Sk. oscar2: two code bytes (Sj is byte-aligned); oscar3: three (Sj is at bit
// 0 or 4 of a byte, 17 bits needed); both wrap past the last code byte.
template <int S> static __device__ __forceinline__ uint32_t oscar_tcq_bits4(const uint8_t * qs, const int j) {
    constexpr int n = 8 * S;  // oscar_tcq_code_bytes
    const int bit = S * j, b0 = bit >> 3, b1 = b0 + 1 == n ? 0 : b0 + 1;
    uint32_t w = (uint32_t) qs[b0] | (uint32_t) qs[b1] << 8;
    if constexpr (S == 3) {
        w |= (uint32_t) qs[b1 + 1 == n ? 0 : b1 + 1] << 16;
    }
    return w >> (bit & 7);
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
//  - a state's new cost and back-pointer are oscar_tcq_pick, the least cost and the lowest c on ties (the CPU's
//    rule), and the first pass ends at the lowest k of least cost (oscar_tcq_last), the second at the overlap, as
//    oscar_tcq_encode.
// Every lane takes 8 branches a step: lane l keeps the 8 / 2^S survivors k = (8 / 2^S) l + h (oscar2: 2l, 2l + 1;
// oscar3: l), whose branches are codebook[8l + t], t = 2^S h + c, from predecessors best[(8l + t) % LINKS], the
// survivors of lanes (8l + t) / (8 / 2^S) (mod 32): 8 shuffles a step. Back-pointers: S bits per survivor and step,
// a word per lane per 8 steps in shared memory. The trace-back follows the same pointers as the CPU's, in groups of
// 8 steps walked in parallel (oscar_tcq_entries), and the bytes are oscar_tcq_pack's with the serial sum of squares
// kept on one lane. A decode step writes few blocks, so a block's latency is the cost: about 2 x 64 steps of
// shuffles and an add/min tree S deep, the rest (norm, trace-backs, pack) made short.
template <int S> struct oscar_tcq_scratch {
    double   u[OSCAR_QK];            // u = x 8 / ||x|| (oscar_tcq_prepare); then the chosen values' squares
    float    x[OSCAR_QK];            // the block's floats
    int32_t  v[OSCAR_QK];            // oscar_tcq_scaled(u)
    uint32_t back[OSCAR_QK / 8][WARP_SIZE];
    uint8_t  entry[OSCAR_QK / 8][OSCAR_TCQ_LINKS(S)];  // see oscar_tcq_entries
    uint8_t  w[OSCAR_QK];            // the windows of the second pass
    uint8_t  out[sizeof(block_oscar<S>)];
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
// or 0 with sm.out the block's bytes (NaN or zero scale, zero codes). Every lane sums the squares itself, in
// element order, so all hold the same bits.
template <int S> static __device__ int oscar_tcq_prepare_warp(oscar_tcq_scratch<S> & sm, double * norm) {
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
        if (l < (int) sizeof(block_oscar<S>)) {
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

// The least of a[0 .. N - 1] and in c its index, the lowest on ties (a tree of strict comparisons: a higher half
// wins only when it is less), as oscar_tcq_viterbi picks a state's predecessor.
template <int N> static __device__ __forceinline__ int32_t oscar_tcq_pick(const int32_t * a, int & c) {
    if constexpr (N == 1) {
        c = 0;
        return a[0];
    } else {
        int cl, ch;
        const int32_t ml = oscar_tcq_pick<N / 2>(a, cl), mh = oscar_tcq_pick<N / 2>(a + N / 2, ch);
        const bool    hi = mh < ml;
        c = hi ? N / 2 + ch : cl;
        return hi ? mh : ml;
    }
}

// One Viterbi pass over v[(j + rot) % 64] (oscar_tcq_viterbi; overlap < 0: free, else constrained). Returns the
// pass's last k (the high L - S bits of its last state), uniform across the warp; back-pointers in sm.back.
template <int S>
static __device__ __forceinline__ int oscar_tcq_warp_pass(oscar_tcq_scratch<S> & sm, const int32_t (&cs)[8], const int rot, const int overlap) {
    constexpr int LINKS = OSCAR_TCQ_LINKS(S), PER = LINKS / WARP_SIZE, NC = 1 << S;  // PER: survivors per lane
    static_assert(OSCAR_TCQ_L == 8 && PER * NC == 8, "warp Viterbi: 8 branches a lane");
    const int l = threadIdx.x % WARP_SIZE;
    int32_t b[PER];
#pragma unroll
    for (int h = 0; h < PER; h++) b[h] = overlap < 0 || PER * l + h == overlap ? 0 : OSCAR_TCQ_FAR;
#pragma unroll 1
    for (int wd = 0; wd < OSCAR_QK / 8; wd++) {
        uint32_t bits = 0;
#pragma unroll
        for (int s = 0; s < 8; s++) {
            const int32_t v = sm.v[(8 * wd + s + rot) & (OSCAR_QK - 1)];
            int32_t a[8];  // a[t] = old best[(8l + t) % LINKS] + branch(v, codebook[8l + t])
#pragma unroll
            for (int t = 0; t < 8; t++) {
                a[t] = __shfl_sync(0xFFFFFFFF, b[t % PER], ((8 * l + t) / PER) & (WARP_SIZE - 1)) + oscar_tcq_branch(v, cs[t]);
            }
#pragma unroll
            for (int h = 0; h < PER; h++) {
                int c;
                b[h] = oscar_tcq_pick<NC>(a + NC * h, c);
                bits |= (uint32_t) c << (S * (PER * s + h));
            }
        }
        sm.back[wd][l] = bits;
    }
    if (overlap >= 0) {
        return overlap;
    }
    // the lowest k of least best[k]: the least value, then the first lane holding it, its lowest h
    int32_t m = b[0];
#pragma unroll
    for (int h = 1; h < PER; h++) m = min(m, b[h]);
#pragma unroll
    for (int off = WARP_SIZE / 2; off > 0; off >>= 1) m = min(m, __shfl_xor_sync(0xFFFFFFFF, m, off, WARP_SIZE));
    int hm = -1;
#pragma unroll
    for (int h = PER - 1; h >= 0; h--) hm = b[h] == m ? h : hm;
    const int first = __ffs(__ballot_sync(0xFFFFFFFF, hm >= 0)) - 1;
    return __shfl_sync(0xFFFFFFFF, PER * l + hm, first);
}

// Back-pointer c of state (k, step j) of the last pass.
template <int S> static __device__ __forceinline__ int oscar_tcq_back(const oscar_tcq_scratch<S> & sm, const int j, const int k) {
    constexpr int PER = OSCAR_TCQ_LINKS(S) / WARP_SIZE;
    return (sm.back[j >> 3][k / PER] >> (S * (PER * (j & 7) + k % PER))) & ((1 << S) - 1);
}

// The trace-back cut into groups g of 8 steps (8g .. 8g + 7): entry[g][k] = the k (high L - S bits) before step 8g
// of the best path that leaves step 8g + 7 in k, for groups g0..7 and every k, each lane walking its survivors' k
// through every group (LINKS independent chains of 8 pointers instead of one chain of 64).
template <int S> static __device__ __forceinline__ void oscar_tcq_entries(oscar_tcq_scratch<S> & sm, const int g0) {
    constexpr int LINKS = OSCAR_TCQ_LINKS(S), PER = LINKS / WARP_SIZE;
    const int l = threadIdx.x % WARP_SIZE;
#pragma unroll
    for (int g = g0; g < OSCAR_QK / 8; g++) {
#pragma unroll
        for (int h = 0; h < PER; h++) {
            int k = PER * l + h;
#pragma unroll
            for (int s = 7; s >= 0; s--) k = (k << S | oscar_tcq_back(sm, 8 * g + s, k)) & (LINKS - 1);
            sm.entry[g][PER * l + h] = (uint8_t) k;
        }
    }
}

// Quantize the 64 floats at x (contiguous) into the 2 + 8S bytes at out (2-byte aligned): the whole warp calls this.
template <int S>
static __device__ void oscar_tcq_quantize_warp(const float * __restrict__ x, uint8_t * __restrict__ out, oscar_tcq_scratch<S> & sm) {
    constexpr int LINKS = OSCAR_TCQ_LINKS(S);
    const float * cb = oscar_tcq_cb_dev<S>();
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
        for (int t = 0; t < 8; t++) cs[t] = oscar_tcq_scaled(cb[8 * l + t]);
        __syncwarp();
        // first pass on the row turned by half a block: the overlap the seam wants (oscar_tcq_seam) is
        // path[32] & (LINKS - 1), the k before step 32 on the path traced back from the pass's end
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
                const int j = 8 * l + s, w = k << S | oscar_tcq_back(sm, j, k);
                sm.w[j] = (uint8_t) w;
                k = w & (LINKS - 1);
            }
        }
        __syncwarp();
        // oscar_tcq_pack: code byte i is stream bits 8i .. 8i + 7, stream bit Sj + t bit t of w_j (t < S), taken
        // from the (at most 4) elements j0 = 8i / S .. whose bits fall in it; the squares of the chosen values (exact
        // in double), summed in element order by lane 0; and the scale
        const double c0 = cb[sm.w[l]], c1 = cb[sm.w[l + 32]];
        sm.u[l]      = c0 * c0;
        sm.u[l + 32] = c1 * c1;
        if (l < 8 * S) {
            const int j0 = 8 * l / S;
            uint32_t  acc = 0;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (S * (j0 + e) < 8 * l + 8) acc |= (uint32_t) (sm.w[j0 + e] & ((1 << S) - 1)) << (S * e);
            }
            sm.out[2 + l] = (uint8_t) (acc >> (8 * l - S * j0));
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
    if (l < (int) sizeof(block_oscar<S>) / 2) {
        ((uint16_t *) out)[l] = (uint16_t) (sm.out[2 * l] | sm.out[2 * l + 1] << 8);
    }
    __syncwarp();  // sm is reused by the warp's next block
}

// CPY F32 -> oscar2/oscar3 (K-shift): cpy.cu's cpy_f32_q with a warp per block (same element and destination
// offsets). Templates, so that only cpy.cu compiles them.
template <int B>
static __global__ void k_cpy_f32_oscar_warp(const char * cx, char * cdst, const int64_t ne,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
        const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
        const int64_t nb12, const int64_t nb13) {
    static_assert(B == 2 || B == 3, "the warp encoder is the trellis codes'");
    __shared__ oscar_tcq_scratch<B> sm;  // blocks of one warp (cpy_f32_oscar_warp_cuda)
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

    oscar_tcq_quantize_warp<B>((const float *) (cx + x_offset), (uint8_t *) (cdst + dst_offset), sm);
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
    if constexpr (B == 4) {
        quantize_f32_oscar4_block_warp(x, out);
    } else {
        __shared__ oscar_tcq_scratch<B> sm;  // blocks of one warp (set_rows_cuda_oscar)
        oscar_tcq_quantize_warp<B>(x, out, sm);
    }
}

template <typename idx_t>
static void set_rows_cuda_oscar(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_ASSERT(src0->ne[0] % QK_OSCAR == 0);
    const int64_t nbr = src0->ne[0] / QK_OSCAR, nblocks = nbr * ggml_nrows(src0);
    if (nblocks == 0) {
        return;
    }
    // oscar2/oscar3: one warp a CUDA block (the warp Viterbi's shuffles are an SM-wide unit: a decode step's few
    // blocks go to as many SMs); oscar4: four
    const int     threads = dst->type == GGML_TYPE_OSCAR4 ? 4 * WARP_SIZE : WARP_SIZE;
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

// Exact oscar4 level of code c by a tree of selects over compile-time constants (no memory access, no divergence).
template <int lo = 0, int n = 16> static __device__ __forceinline__ float oscar4_level_of(const uint32_t c) {
    if constexpr (n == 1) {
        constexpr float level = oscar_level4(lo);
        return level;
    } else {
        return (c & (n / 2)) ? oscar4_level_of<lo + n / 2, n / 2>(c) : oscar4_level_of<lo, n / 2>(c);
    }
}

// Block ib, elements iqs and iqs + 32 (iqs < 32): the dequantize_kernel_t shape used by convert/getrows/cpy.
// oscar2/oscar3: scale x codebook[window], the CPU's float multiply (oscar_tcq_value), so the values are the CPU's bits.
template <int B> static __device__ __forceinline__ void dequantize_oscar(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const uint8_t * b = (const uint8_t *) vx + ib * sizeof(block_oscar<B>);
    const float     d = __half2float(__ushort_as_half(oscar_block_scale(b)));
    if constexpr (B == 4) {
        v.x = d * oscar4_level_of(oscar_code4(b + 2, iqs));
        v.y = d * oscar4_level_of(oscar_code4(b + 2, iqs + 32));
    } else {
        v.x = oscar_tcq_value(B, oscar_tcq_cb_dev<B>(), d, b + 2, iqs);
        v.y = oscar_tcq_value(B, oscar_tcq_cb_dev<B>(), d, b + 2, iqs + 32);
    }
}

// Flash attention, vec kernel (decode); the MMA kernel (prefill) reads K/V through the converters above.
// oscar4: codes of the 4 consecutive elements i..i+3 (i % 4 == 0) of one block, one per byte: the strided
// layout keeps them in 4 consecutive bytes, so this is one 4-byte load (blocks are 2-byte aligned) and a mask.
static __device__ __forceinline__ uint32_t oscar4_codes(const uint8_t * qs, const int i) {
    uint32_t w;
    ggml_cuda_memcpy_1<sizeof(int), 2>(&w, qs + i % 32);
    return (w >> (4 * (i / 32))) & 0x0F0F0F0F;
}

// The decode loop looks oscar4's levels up with byte permutes from registers instead of memory: the codebook as
// int8 multiples of max|level| / 127 (K: dp4a against the q8_1 query), or offset by 128 (V: turned into
// halves by exponent bits). Rounding the levels to 1/127 of the largest moves each by at most 0.4 % of it,
// far below the format's own error (tests: test-backend-ops against the exact CPU path).
template <int bias> __host__ __device__ constexpr uint32_t oscar4_lut_word(int w) {
    uint32_t r = 0;
    for (int k = 0; k < 4; k++) r |= uint32_t(uint8_t(oscar_round(oscar_level4(4*w + k) / oscar_level4_unit()) + bias)) << (8*k);
    return r;
}

// 4 selector nibbles (low 16 bits; __byte_perm reads 3 bits of each) -> their 4 LUT bytes: both halves of the
// codebook looked up, then picked by each code's top bit.
template <int bias> static __device__ __forceinline__ uint32_t oscar4_lookup_sel(const uint32_t sel) {
    constexpr uint32_t w0 = oscar4_lut_word<bias>(0), w1 = oscar4_lut_word<bias>(1);
    constexpr uint32_t w2 = oscar4_lut_word<bias>(2), w3 = oscar4_lut_word<bias>(3);
    const uint32_t lo = __byte_perm(w0, w1, sel);
    const uint32_t hi = __byte_perm(w2, w3, sel);
    return __byte_perm(lo, hi, 0x3210 | ((sel & 0x8888) >> 1));
}

// 4 codes (one per byte) -> their 4 LUT bytes.
template <int bias> static __device__ __forceinline__ uint32_t oscar4_lookup(const uint32_t codes) {
    return oscar4_lookup_sel<bias>(__byte_perm(codes | (codes >> 4), 0, 0x0020));  // selector nibbles c0 c1 c2 c3
}

// Bytes 2 pair and 2 pair + 1 of u8 (level + 128 each) as exact half levels: halves with exponent bits 0x64 are
// 1024 + byte, so subtracting 1152 leaves the level (integers below 2048 are exact in half).
static __device__ __forceinline__ half2 oscar_level_pair_h2(const uint32_t u8, const int pair) {
    const uint32_t h = __byte_perm(u8, 0x64646464, 0x7170 + pair * 0x0202);
    return __hsub2(*(const half2 *) &h, __float2half2_rn(1152.0f));
}

// The int8 levels (oscar_tcq_level8) of elements j .. j + 3 of an oscar2/oscar3 block (j % 4 == 0), one per byte.
// The 256-byte table spans two cache lines, so a warp's scattered lookups cost at most two L1 wavefronts each (the
// 2 or 4 KB pair table would cost up to 16 or 32).
template <int S> static __device__ __forceinline__ uint32_t oscar_tcq_levels4(const uint8_t * qs, const int j) {
    const uint32_t  s = oscar_tcq_bits4<S>(qs, j);
    const uint8_t * t = oscar_tcq_level8_dev<S>();
    const uint32_t l0 = __ldg(t + (s & 0xFF)), l1 = __ldg(t + ((s >> S) & 0xFF));
    const uint32_t l2 = __ldg(t + ((s >> (2 * S)) & 0xFF)), l3 = __ldg(t + ((s >> (3 * S)) & 0xFF));
    return __byte_perm(l0 | l1 << 8, l2 | l3 << 8, 0x5410);
}

// The int8 level unit of a type's K.Q lookups.
template <int B> __host__ __device__ constexpr float oscar_k_unit() {
    if constexpr (B == 4) {
        return oscar_level4_unit();
    } else {
        return oscar_tcq_unit<B>();
    }
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
        if constexpr (B == 4) {
            k8 = oscar4_lookup<0>(oscar4_codes(b + 2, e % QK_OSCAR));
        } else {
            k8 = oscar_tcq_levels4<B>(b + 2, e % QK_OSCAR);
        }
        const int s  = ggml_cuda_dp4a(k8, Q_q8[k_KQ_0/nthreads], 0);
        const float2 Q_ds = ((const float2 *) Q_ds_v)[k_KQ_0/nthreads];
        sum += __half2float(__ushort_as_half(oscar_block_scale(b))) * Q_ds.x * float(s);
    }
    constexpr float unit = oscar_k_unit<B>();
    return sum * unit;
}

// V: ne (2 or 4) consecutive decoded values from element i0 of a cached row (i0 % 4 + ne <= 4).
template <typename T, int ne, int B>
static __device__ __forceinline__ void dequantize_V_oscar(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    const uint8_t * b = (const uint8_t *) vx + (i0 / QK_OSCAR) * sizeof(block_oscar<B>);
    const int       i = i0 % QK_OSCAR;
    if constexpr (B != 4) {  // int8 levels (oscar_tcq_level8) x scale x unit
        constexpr float unit = oscar_tcq_unit<B>();
        const float    d = __half2float(__ushort_as_half(oscar_block_scale(b))) * unit;
        const uint32_t s = oscar_tcq_bits4<B>(b + 2, i & ~3) >> (B * (i & 3));
        float f[ne];
#pragma unroll
        for (int l = 0; l < ne; l++) f[l] = d * (float) (int8_t) __ldg(oscar_tcq_level8_dev<B>() + ((s >> (B * l)) & (OSCAR_TCQ_STATES - 1)));
        if constexpr (std::is_same_v<T, half>) {
#pragma unroll
            for (int l = 0; l < ne; l += 2) ((half2 *) dst)[l / 2] = __floats2half2_rn(f[l], f[l + 1]);
        } else {
#pragma unroll
            for (int l = 0; l < ne; l++) ((float *) dst)[l] = f[l];
        }
    } else {
        constexpr float unit = oscar_level4_unit();
        const float     d = __half2float(__ushort_as_half(oscar_block_scale(b))) * unit;
        const uint32_t u8 = oscar4_lookup<128>(oscar4_codes(b + 2, i & ~3));  // level + 128 per byte
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
