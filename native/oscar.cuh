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

// F32 -> block, one thread per block (CPY of oscar4; oscar2/oscar3 take the trellis encoder below).
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

// The encoder, one CUDA block of 64 threads per block: thread t takes element t, and the 4 branches c = 4h .. 4h + 3
// of survivor k (t = 2^S k / 4 + h: oscar2 one survivor a thread, oscar3 half of one, the halves met by a shuffle).
// Identical bytes to oscar_tcq_quantize_block (CPU, scalar or AVX2) because:
//  - the norm, u = x 8 / ||x|| and the NaN / zero / Inf rules are oscar_tcq_prepare's steps in its order and in
//    double (oscar_tcq_prepare_dev: the sum of squares serial in element order on every thread), and the bytes and
//    scale are oscar_tcq_pack's (its sum of the chosen values' squares serial in element order, on thread 0).
//    Double arithmetic is IEEE on the GPU (-use_fast_math touches float only) and a product of two floats is exact
//    in double, so a contracted DFMA, or adding a square computed apart, sums the same bits. One float detail: with
//    -ftz a float -> double conversion flushes a subnormal float to 0, so the conversions of x go through
//    oscar_f2d, which keeps it (the CPU's (double) x);
//  - the Viterbi costs are the same integers: vi = oscar_tcq_scaled(u) (rint of a double, the same bits), ci the
//    codebook scaled the same way, and oscar_tcq_branch's exact (vi - ci)^2;
//  - a survivor's new cost is oscar_tcq_pick's, the least cost and the lowest c on ties (the CPU's rule), the first
//    pass ends at the lowest k of least cost (oscar_tcq_argmin_dev, as oscar_tcq_last), the second at the overlap.
// A decode step writes few blocks, so a block's latency is the cost, and it is 2 x 64 dependent Viterbi steps. A
// step of survivor k reads its predecessors' costs best[(2^S k + c) % LINKS], 4 consecutive ints a thread (one
// 16-byte shared load), adds its branches (computed the step before, off the chain), picks, stores, and the block
// meets at one __syncthreads: the work of a step spread over two warps' schedulers, 4 branches a thread (H100:
// 14.4 us a decode-step launch for oscar2 against 20.1 with one warp a block; docs/gpu-tcq-setrows-write64-h100.txt).
// No back-pointers and no trace-back pass: each survivor carries its path through the current group of 8 steps as
// one word (oscar_tcq_path), picked along with its cost, and the word of every survivor at a group's end is kept.
// The trace-back is then 8 lookups (group entries), and a group's word holds its S code bytes as they are packed.
// A predecessor p is candidate c = p % 2^S of every survivor that reads it, so p stores its word with that c already
// in the next step's bits.
// (oscar3 with 8 branches a thread, one thread a survivor and no shuffle, writes the same bytes too, at 44 rather
// than 28 instructions a step; not timed against this.)
template <int S> struct oscar_tcq_scratch {
    static constexpr int LINKS = OSCAR_TCQ_LINKS(S), NC = 1 << S, CT = 4;  // CT: branches a thread
    static constexpr int H = NC / CT, NT = LINKS * H;  // threads a survivor, threads
    static_assert(NT == OSCAR_QK || OSCAR_QK % NT == 0, "threads divide the block");
    int32_t  v[OSCAR_QK];                         // oscar_tcq_scaled(u)
    __align__(16) int32_t  cost[2][LINKS];        // best[k] before and after a step (steps alternate)
    __align__(16) uint32_t path[2][LINKS];        // the survivors' path words (oscar_tcq_path) within a group
    uint32_t group[OSCAR_QK / 8][LINKS];          // the path words at the end of group g (steps 8g .. 8g + 7)
    double   sq[OSCAR_QK];                        // the squares of x, then of the chosen values
    int32_t  low[NT / WARP_SIZE][2];              // a warp's least cost and its lowest k (oscar_tcq_argmin_dev)
    uint8_t  out[sizeof(block_oscar<S>)];
};

// A survivor's path through steps 8g .. 8g + s of group g: the c of step 8g + t at bits St .. St + S - 1 (so the
// group's word is its S code bytes: stream bit Sj + t is bit t of c_j), and the k it entered the group from at bit 24.
template <int S> static __device__ __forceinline__ uint32_t oscar_tcq_path(const uint32_t entry, const int c, const int s) {
    static_assert(8 * S <= 24, "a group's code bits below the entry");
    return entry << 24 | (uint32_t) c << (S * s);
}
static __device__ __forceinline__ int oscar_tcq_entry(const uint32_t path) { return (int) (path >> 24); }

// (double) x as the CPU converts it, subnormal floats included.
static __device__ __forceinline__ double oscar_f2d(const float x) {
    const uint32_t b = __float_as_uint(x);
    if (b & 0x7f800000u) {
        return (double) x;  // normal, Inf or NaN: nothing to flush
    }
    const double m = (double) (b & 0x7fffffu) * 0x1p-149;  // zero or subnormal: mantissa x 2^-149, exact
    return b >> 31 ? -m : m;
}

// The serial sum of sm.sq in element order (the CPU's loops), on every thread that calls it.
template <int S> static __device__ __forceinline__ double oscar_tcq_sum_dev(const oscar_tcq_scratch<S> & sm) {
    double r = 0.0;
#pragma unroll 16
    for (int j = 0; j < OSCAR_QK; j++) r += sm.sq[j];
    return r;
}

// oscar_tcq_prepare for the 64 floats at x, by the whole block: returns 1 with *norm = ||x|| and sm.v (the scaled
// u = x 8 / ||x||), or 0 with sm.out the block's bytes (NaN or zero scale, zero codes). The squares (exact in double)
// are made in parallel and every thread sums them itself, in element order (oscar_block_sumsq's bits): a NaN in x
// is a NaN sum, and only a NaN makes one (+-Inf counts as +-FLT_MAX, whose square is finite).
template <int S> static __device__ int oscar_tcq_prepare_dev(oscar_tcq_scratch<S> & sm, const float * x, double * norm) {
    constexpr int NT = oscar_tcq_scratch<S>::NT, PER = OSCAR_QK / NT;  // elements t + NT i on thread t
    const int t = threadIdx.x;
    double xd[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) {
        xd[i] = oscar_f2d(oscar_clamp_inf(x[t + NT * i]));
        sm.sq[t + NT * i] = xd[i] * xd[i];
    }
    __syncthreads();
    const double ss  = oscar_tcq_sum_dev(sm);
    const bool   nan = isnan(ss);
    if (nan || !(ss > 0.0)) {
        for (int i = t; i < (int) sizeof(block_oscar<S>); i += NT) {
            const uint16_t d = nan ? OSCAR_FP16_NAN : 0;
            sm.out[i] = i == 0 ? (uint8_t) (d & 0xff) : i == 1 ? (uint8_t) (d >> 8) : 0;
        }
        return 0;
    }
    *norm = sqrt(ss);
    const double inv = 8.0 / *norm;  // sqrt(64) / ||x||
#pragma unroll
    for (int i = 0; i < PER; i++) sm.v[t + NT * i] = oscar_tcq_scaled(xd[i] * inv);
    return 1;
}

// The least of a[0 .. N - 1] and in w its payload p, the lowest index on ties (a tree of strict comparisons: a higher
// half wins only when it is less), as oscar_tcq_viterbi picks a state's predecessor.
template <int N> static __device__ __forceinline__ int32_t oscar_tcq_pick(const int32_t * a, const uint32_t * p, uint32_t & w) {
    if constexpr (N == 1) {
        w = p[0];
        return a[0];
    } else {
        uint32_t wl, wh;
        const int32_t ml = oscar_tcq_pick<N / 2>(a, p, wl), mh = oscar_tcq_pick<N / 2>(a + N / 2, p + N / 2, wh);
        const bool    hi = mh < ml;
        w = hi ? wh : wl;
        return hi ? mh : ml;
    }
}

// The least cost of survivor k and its path word, from the picks of its H threads (adjacent lanes, branches in
// order: a later half wins only when it is less), on each of them.
template <int H> static __device__ __forceinline__ int32_t oscar_tcq_meet(int32_t b, uint32_t & w) {
#pragma unroll
    for (int off = 1; off < H; off <<= 1) {
        const int32_t  ob = __shfl_xor_sync(0xFFFFFFFF, b, off, WARP_SIZE);
        const uint32_t ow = __shfl_xor_sync(0xFFFFFFFF, w, off, WARP_SIZE);
        const bool     other = ob < b || ((threadIdx.x & off) && ob == b);  // ties: to the lower half
        w = other ? ow : w;
        b = other ? ob : b;
    }
    return b;
}

// One Viterbi pass over v[(j + rot) % 64] (oscar_tcq_viterbi; overlap < 0: free, else constrained), thread t taking
// branches c = CT h .. CT h + CT - 1 of survivor k (t = H k + h); cs: their scaled codebook entries. Returns best[k]
// after the last step; the path words at each group's end are in sm.group.
template <int S>
static __device__ __forceinline__ int32_t oscar_tcq_pass(oscar_tcq_scratch<S> & sm, const int32_t (&cs)[oscar_tcq_scratch<S>::CT], const int rot, const int overlap) {
    using sc = oscar_tcq_scratch<S>;
    constexpr int LINKS = sc::LINKS, NC = sc::NC, CT = sc::CT, H = sc::H;
    const int k = threadIdx.x / H, c0 = CT * (threadIdx.x % H), p0 = (NC * k) % LINKS + c0;  // predecessors p0 + i
    int32_t b = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    int32_t vg[8], br[CT];  // the group's values; the next step's branches
#pragma unroll
    for (int s = 0; s < 8; s++) vg[s] = sm.v[(s + rot) & (OSCAR_QK - 1)];
#pragma unroll
    for (int i = 0; i < CT; i++) br[i] = oscar_tcq_branch(vg[0], cs[i]);
    sm.cost[0][k] = b;
    __syncthreads();
#pragma unroll 1
    for (int g = 0; g < OSCAR_QK / 8; g++) {
        int32_t vn[8];  // the next group's values (past the last group: unused)
#pragma unroll
        for (int s = 0; s < 8; s++) vn[s] = sm.v[(8 * g + 8 + s + rot) & (OSCAR_QK - 1)];
#pragma unroll
        for (int s = 0; s < 8; s++) {
            int32_t  a[CT];
            uint32_t p[CT], w;
#pragma unroll
            for (int i = 0; i < CT; i++) {
                a[i] = sm.cost[s & 1][p0 + i] + br[i];
                p[i] = s == 0 ? oscar_tcq_path<S>(p0 + i, c0 + i, 0) : sm.path[(s - 1) & 1][p0 + i];
            }
            b = oscar_tcq_meet<H>(oscar_tcq_pick<CT>(a, p, w), w);
            if (threadIdx.x % H == 0) {
                sm.cost[(s + 1) & 1][k] = b;
                if (s == 7) {
                    sm.group[g][k] = w;
                } else {
                    sm.path[s & 1][k] = w | (uint32_t) (k % NC) << (S * (s + 1));  // as branch k % NC of step s + 1
                }
            }
            const int32_t v = s == 7 ? vn[0] : vg[s + 1];
#pragma unroll
            for (int i = 0; i < CT; i++) br[i] = oscar_tcq_branch(v, cs[i]);
            __syncthreads();
        }
#pragma unroll
        for (int s = 0; s < 8; s++) vg[s] = vn[s];
    }
    return b;
}

// The lowest k of least b over the block's threads (thread t holding best[t / H]; oscar_tcq_last), on every thread.
template <int S> static __device__ __forceinline__ int oscar_tcq_argmin_dev(oscar_tcq_scratch<S> & sm, const int32_t b) {
    constexpr int NW = oscar_tcq_scratch<S>::NT / WARP_SIZE;
    const int l = threadIdx.x % WARP_SIZE, wp = threadIdx.x / WARP_SIZE;
    int32_t m = b;
#pragma unroll
    for (int off = WARP_SIZE / 2; off > 0; off >>= 1) m = min(m, __shfl_xor_sync(0xFFFFFFFF, m, off, WARP_SIZE));
    const int first = __ffs(__ballot_sync(0xFFFFFFFF, b == m)) - 1;
    if (l == 0) {
        sm.low[wp][0] = m;
        sm.low[wp][1] = (WARP_SIZE * wp + first) / oscar_tcq_scratch<S>::H;
    }
    __syncthreads();
    int w = 0;  // a later warp wins only when its least cost is less
#pragma unroll
    for (int i = 1; i < NW; i++) w = sm.low[i][0] < sm.low[w][0] ? i : w;
    return sm.low[w][1];
}

// Quantize the 64 floats at x (contiguous) into the 2 + 8S bytes at out (2-byte aligned): the whole block of
// oscar_tcq_scratch<S>::NT threads calls this, once.
template <int S>
static __device__ void oscar_tcq_quantize_dev(const float * __restrict__ x, uint8_t * __restrict__ out, oscar_tcq_scratch<S> & sm) {
    constexpr int NT = oscar_tcq_scratch<S>::NT, CT = oscar_tcq_scratch<S>::CT;
    const float * cb = oscar_tcq_cb_dev<S>();
    const int t = threadIdx.x;
    int32_t cs[CT];  // the codebook entries of thread t's branches (windows CT t + i), as oscar_tcq_scaled_codebook
#pragma unroll
    for (int i = 0; i < CT; i++) cs[i] = oscar_tcq_scaled(cb[CT * t + i]);
    double norm = 0.0;
    if (oscar_tcq_prepare_dev(sm, x, &norm)) {  // uniform: every thread computed the same sum
        __syncthreads();
        // first pass on the row turned by half a block: the overlap the seam wants (oscar_tcq_seam) is the k before
        // step 32 on the best path, group 4's entry
        int k = oscar_tcq_argmin_dev(sm, oscar_tcq_pass(sm, cs, OSCAR_QK / 2, -1));
#pragma unroll
        for (int g = OSCAR_QK / 8 - 1; g >= OSCAR_QK / 16; g--) k = oscar_tcq_entry(sm.group[g][k]);
        // second pass, constrained to that overlap (so the path ends in it): thread g < 8 follows the entries from
        // the end back to its group, whose word is its S code bytes
        oscar_tcq_pass(sm, cs, 0, k);
        if (t < OSCAR_QK / 8) {
            uint32_t w = 0;
            for (int g = OSCAR_QK / 8 - 1; g >= t; g--) {
                w = sm.group[g][k];
                k = oscar_tcq_entry(w);
            }
#pragma unroll
            for (int i = 0; i < S; i++) sm.out[2 + S * t + i] = (uint8_t) (w >> 8 * i);
        }
        __syncthreads();
        // oscar_tcq_pack's scale: the squares of the chosen values (exact in double), summed in element order on
        // thread 0
#pragma unroll
        for (int j = t; j < OSCAR_QK; j += NT) {
            const double c = cb[oscar_tcq_window(S, sm.out + 2, j)];
            sm.sq[j] = c * c;
        }
        __syncthreads();
        if (t == 0) {
            const uint16_t d = oscar_scale_bits(norm, oscar_tcq_sum_dev(sm));
            sm.out[0] = (uint8_t) (d & 0xff);
            sm.out[1] = (uint8_t) (d >> 8);
        }
    }
    __syncthreads();
    if (t < (int) sizeof(block_oscar<S>) / 2) {
        ((uint16_t *) out)[t] = (uint16_t) (sm.out[2 * t] | sm.out[2 * t + 1] << 8);
    }
}

// CPY F32 -> oscar2/oscar3 (K-shift): cpy.cu's cpy_f32_q with a CUDA block per block (same element and destination
// offsets). Templates, so that only cpy.cu compiles them.
template <int B>
static __global__ void k_cpy_f32_oscar_warp(const char * cx, char * cdst, const int64_t ne,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
        const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
        const int64_t nb12, const int64_t nb13) {
    static_assert(B == 2 || B == 3, "the trellis codes' encoder");
    __shared__ oscar_tcq_scratch<B> sm;  // oscar_tcq_scratch<B>::NT threads (cpy_f32_oscar_warp_cuda)
    const int64_t i = (int64_t) blockIdx.x * QK_OSCAR;
    if (i >= ne) {
        return;  // the whole CUDA block
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

    oscar_tcq_quantize_dev<B>((const float *) (cx + x_offset), (uint8_t *) (cdst + dst_offset), sm);
}

template <int B>
static void cpy_f32_oscar_warp_cuda(const char * cx, char * cdst, const int64_t ne,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
        const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
        const int64_t nb12, const int64_t nb13, cudaStream_t stream) {
    GGML_ASSERT(ne % QK_OSCAR == 0 && nb00 == sizeof(float));
    // a CUDA block of 64 threads for each block (oscar_tcq_quantize_dev)
    k_cpy_f32_oscar_warp<B><<<ne / QK_OSCAR, oscar_tcq_scratch<B>::NT, 0, stream>>>(cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12,
                                                       nb10, nb11, nb12, nb13);
}

// ---- SET_ROWS F32 -> OScaR ------------------------------------------------------------------------------------

// Block ib of src0 (64 elements) into row src1[...] of dst: oscar4 by warp ib of the grid, oscar2/oscar3 by CUDA
// block ib.
template <typename idx_t, int B>
static __global__ void k_set_rows_oscar(const float * __restrict__ src0, const idx_t * __restrict__ src1, char * __restrict__ dst,
        const int64_t nblocks, const int64_t nbr, const int64_t ne01, const int64_t ne02, const int64_t ne11, const int64_t ne12,
        const int64_t s01, const int64_t s02, const int64_t s03, const int64_t s10, const int64_t s11, const int64_t s12,
        const int64_t nb1, const int64_t nb2, const int64_t nb3) {
    const int64_t ib = B == 4 ? ((int64_t) blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE : (int64_t) blockIdx.x;
    if (ib >= nblocks) {
        return;  // the whole warp (oscar4) or CUDA block
    }
    const int64_t i00 = ib % nbr, i01 = (ib / nbr) % ne01, i02 = (ib / nbr / ne01) % ne02, i03 = ib / nbr / ne01 / ne02;
    const int64_t row = src1[i01 * s10 + (i02 % ne11) * s11 + (i03 % ne12) * s12];
    const float * x   = src0 + i01 * s01 + i02 * s02 + i03 * s03 + i00 * QK_OSCAR;
    uint8_t     * out = (uint8_t *) dst + row * nb1 + i02 * nb2 + i03 * nb3 + i00 * sizeof(block_oscar<B>);
    if constexpr (B == 4) {
        quantize_f32_oscar4_block_warp(x, out);
    } else {
        __shared__ oscar_tcq_scratch<B> sm;  // oscar_tcq_scratch<B>::NT threads (set_rows_cuda_oscar)
        oscar_tcq_quantize_dev<B>(x, out, sm);
    }
}

template <typename idx_t>
static void set_rows_cuda_oscar(const ggml_tensor * src0, const ggml_tensor * src1, ggml_tensor * dst, cudaStream_t stream) {
    GGML_ASSERT(src0->ne[0] % QK_OSCAR == 0);
    const int64_t nbr = src0->ne[0] / QK_OSCAR, nblocks = nbr * ggml_nrows(src0);
    if (nblocks == 0) {
        return;
    }
    // oscar2/oscar3: a CUDA block of 64 threads for each block (oscar_tcq_quantize_dev: a decode
    // step's few blocks go to as many SMs); oscar4: four warps of one block each
    const int64_t e0 = sizeof(float), e1 = sizeof(idx_t);
#define OSCAR_SET_ROWS(B, grid, threads) k_set_rows_oscar<idx_t, B><<<grid, threads, 0, stream>>>( \
        (const float *) src0->data, (const idx_t *) src1->data, (char *) dst->data, nblocks, nbr, src0->ne[1], src0->ne[2], \
        src1->ne[1], src1->ne[2], src0->nb[1] / e0, src0->nb[2] / e0, src0->nb[3] / e0, src1->nb[0] / e1, src1->nb[1] / e1, \
        src1->nb[2] / e1, dst->nb[1], dst->nb[2], dst->nb[3])
    switch (dst->type) {
        case GGML_TYPE_OSCAR2: OSCAR_SET_ROWS(2, nblocks, oscar_tcq_scratch<2>::NT); break;
        case GGML_TYPE_OSCAR3: OSCAR_SET_ROWS(3, nblocks, oscar_tcq_scratch<3>::NT); break;
        default:               OSCAR_SET_ROWS(4, (nblocks + 3) / 4, 4 * WARP_SIZE); break;
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
