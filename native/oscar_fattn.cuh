// OScaR flash-attention decode for ggml-cuda: one query token, K and V of OScaR types (patches/0004 routes
// those cases here from fattn.cu; everything else keeps upstream's kernels). Upstream's vec kernel decodes
// every K/V row once per query head and reduces each K.Q dot across a warp. Here one block serves the G query
// heads that share a KV head, so each K/V element is decoded once for all of them, a thread owns whole
// 64-element K blocks (no cross-lane reduction for D = 64) and fixed V columns.
//   K.Q: levels as int8, dp4a against Q quantized to int8 per 64-element block.
//   V:   values in half; a tile is accumulated in half2, tiles in float.
//   oscar4: the levels by byte permutes (oscar.cuh), V's with offset 128 turned into halves.
//   oscar2, oscar3 (trellis, S bits per element): elements j and j + 1 are the S + 8 stream bits from bit Sj, so
//   each pair of elements is one lookup in a 2^(8 + S)-entry table (1024 or 2048) in shared memory, loaded once per
//   block: two int8 levels (K, a u16) or the two codebook values as a half2 (V, exact to half precision); 8
//   consecutive elements come from one 32-bit piece of the stream.
// The KV length is split over blocks like the vec kernel; flash_attn_combine_results merges the parts.
#pragma once

#include "oscar.cuh"
#include "oscar_fattn_tier.cuh"

namespace oscar_dec {

constexpr int NTHREADS   = 128;
constexpr int TILE_ELEMS = 32768;  // K elements per tile: T = TILE_ELEMS / D rows
constexpr int SPLIT_ROWS = 64;     // KV split unit when there are fewer tiles than splits (short caches still spread)

// Element (0..63) of a block that output k (0..7) of code pair p (0..7) holds, see oscar4_pair_decode (oscar2,
// oscar3: tcq_pairs, elements in order).
template <int B> __host__ __device__ constexpr int pair_elem(const int p, const int k) {
    return B == 4 ? 4 * p + 2 * (k / 4) + (k % 4) / 2 + 32 * (k % 2) : 8 * p + k;
}

// oscar4: levels (int8 + bias per byte) of the 8 elements of pair p from lo = code bytes 4p..4p+3 (element j low
// nibble, j+32 high nibble). A byte_perm selector reads 3 bits per nibble.
template <int bias> static __device__ __forceinline__ void oscar4_pair_decode(const uint32_t lo, uint32_t & r0, uint32_t & r1) {
    r0 = oscar4_lookup_sel<bias>(lo);
    r1 = oscar4_lookup_sel<bias>(lo >> 16);
}

// oscar2, oscar3: entry at byte offset o of a pair table (T = uint16_t: int8 levels for K, half2: values for V).
template <typename T> static __device__ __forceinline__ T tcq_entry(const T * table, const uint32_t o) {
    return *(const T *) ((const char *) table + o);
}

// oscar2, oscar3: the 4 pairs of elements 8q .. 8q + 7 of a block from x = stream bits 8Sq .. 8Sq + 31: pair m is
// the (S + 8)-bit window at bit 2Sm of x. Table byte offsets are taken straight from x (a shift and a mask each).
template <int S, typename T> static __device__ __forceinline__ void tcq_pairs(const T * table, const uint32_t x, T (&r)[4]) {
    constexpr int E = sizeof(T) == 2 ? 1 : 2;  // log2 of the entry size
    constexpr uint32_t M = (OSCAR_TCQ_PAIRS(S) - 1) << E;
    r[0] = tcq_entry(table, (x << E) & M);
#pragma unroll
    for (int m = 1; m < 4; m++) r[m] = tcq_entry(table, (x >> (2 * S * m - E)) & M);
}

// oscar2, oscar3: stream bits 8Sq .. 8Sq + 31 (elements 8q ..) of a block's code bytes as 2S words c (circular).
template <int S> static __device__ __forceinline__ uint32_t tcq_piece(const uint32_t (&c)[2 * S], const int q) {
    const int bit = 8 * S * q, w = bit / 32;
    return __funnelshift_r(c[w], c[(w + 1) % (2 * S)], bit % 32);
}

// NW words from a 2-byte aligned address: aligned loads, funnel-shifted when the address is not 4-aligned.
template <int NW> static __device__ __forceinline__ void load_words(const uint8_t * p, uint32_t (&w)[NW]) {
    const uint32_t * a   = (const uint32_t *) ((uintptr_t) p & ~(uintptr_t) 3);
    const bool       odd = (uintptr_t) p & 2;
    uint32_t x[NW + 1];
#pragma unroll
    for (int i = 0; i < NW; i++) x[i] = __ldg(a + i);
    x[NW] = odd ? __ldg(a + NW) : 0;
#pragma unroll
    for (int i = 0; i < NW; i++) w[i] = __funnelshift_r(x[i], x[i + 1], odd ? 16 : 0);
}

static __device__ __forceinline__ uint32_t load_u16(const uint8_t * p) { return __ldg((const unsigned short *) p); }

// The same piece as tcq_piece, loaded from a block's code bytes at qs (2-byte aligned): bytes Sq .. Sq + 3, wrapping.
// oscar3's odd q start at an odd byte: three halfwords, funnel-shifted.
template <int S> static __device__ __forceinline__ uint32_t tcq_load_piece(const uint8_t * qs, const int q) {
    constexpr int n = 8 * S;
    const int o = S * q, e = o & ~1, e2 = e + 2 == n ? 0 : e + 2;
    const uint32_t lo = load_u16(qs + e) | load_u16(qs + e2) << 16;
    if constexpr (S % 2 == 0) {
        return lo;
    } else {
        return __funnelshift_r(lo, load_u16(qs + (e2 + 2 == n ? 0 : e2 + 2)), 8 * (o & 1));
    }
}

static __device__ __forceinline__ void prefetch_l2(const void * p) { asm volatile("prefetch.global.L2 [%0];" :: "l"(p)); }

// Grid: x = KV head + ne12 * (GQA tile + ntg * sequence) (heads fastest, so blocks running together read
// neighbouring bytes of the same tokens), y = KV split. Q has one token (ne01 == 1).
template <int D, int BK, int BV, int G>
__launch_bounds__(NTHREADS, G == 4 ? 3 : 4)  // G = 4: 3 blocks of 4 warps per SM (168 registers)
static __global__ void flash_attn_oscar_decode(
        const char * __restrict__ Q, const char * __restrict__ K, const char * __restrict__ V, const char * __restrict__ mask,
        float * __restrict__ dst, float2 * __restrict__ dst_meta,
        const float scale, const float max_bias, const float m0, const float m1, const uint32_t n_head_log2,
        const int ne02, const int ne12, const int ne11, const int ntg, const int split_rows, const int nparts,
        const int64_t nb02, const int64_t nb03,
        const int64_t nb11, const int64_t nb12, const int64_t nb13,
        const int64_t nb21, const int64_t nb22, const int64_t nb23,
        const int ne33, const int64_t nb33) {
    constexpr int NBLK = D / 64;               // 64-element blocks per row
    constexpr int T    = TILE_ELEMS / D;       // rows per tile
    constexpr int RP   = NTHREADS / NBLK;      // K phase: rows per pass, one thread per (row, block)
    constexpr int TPR  = D / 8;                // V phase: threads per row, 8 columns each
    constexpr int RS   = NTHREADS / TPR;       //          row slots
    constexpr int BBK  = sizeof(block_oscar<BK>), BBV = sizeof(block_oscar<BV>);
    // the int8 level unit of K; V's weights carry the unit of its levels (the trellis V tables hold codebook values)
    constexpr float unit_K = oscar_k_unit<BK>(), unit_V = BV == 4 ? oscar_level4_unit() : 1.0f;
    static_assert(T % RP == 0 && T % RS == 0 && T % WARP_SIZE == 0 && G <= NTHREADS / WARP_SIZE, "tile shape");

    constexpr int SMEM_LOOP = G * T * (int) sizeof(float) + T * NBLK * G * (int) sizeof(half2);  // S + W
    constexpr int SMEM_RED  = RS * G * D * (int) sizeof(float);
    constexpr int SMEM_Q    = G * D * (int) sizeof(float);
    constexpr int SMEM = SMEM_LOOP > SMEM_RED ? (SMEM_LOOP > SMEM_Q ? SMEM_LOOP : SMEM_Q) : (SMEM_RED > SMEM_Q ? SMEM_RED : SMEM_Q);
    __shared__ __align__(16) char smem[SMEM];
    __shared__ float alpha_sh[G], dq_sh[G][NBLK], max_sh[G], sum_sh[G];
    __shared__ __align__(16) uint16_t kpair_sh[BK == 4 ? 1 : OSCAR_TCQ_PAIRS(BK)];  // trellis K: int8 levels of pair i
    __shared__ __align__(16) half2    vpair_sh[BV == 4 ? 1 : OSCAR_TCQ_PAIRS(BV)];  // trellis V: values of pair i
    float * S  = (float *) smem;                  // [G][T] scores of the current tile
    half2 * W  = (half2 *) (smem + G * T * sizeof(float));  // [T][NBLK][G] softmax weight x V block scale

    const int tid  = threadIdx.x;
    const int lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
    const int kvh  = blockIdx.x % ne12;
    const int gt   = (blockIdx.x / ne12) % ntg;
    const int seq  = blockIdx.x / (ne12 * ntg);
    const int gqa  = ne02 / ne12;
    const int head0 = kvh * gqa + gt * G;        // first query head of this block
    const int ng   = min(G, gqa - gt * G);       // query heads present

    const uint8_t * Kh = (const uint8_t *) K + nb13 * seq + nb12 * kvh;
    const uint8_t * Vh = (const uint8_t *) V + nb23 * seq + nb22 * kvh;
    const half    * mh = mask ? (const half *) (mask + nb33 * (seq % ne33)) : nullptr;

    if constexpr (BK != 4) {  // the tables are read after the barriers below
        for (int i = tid; i < OSCAR_TCQ_PAIRS(BK) / 8; i += NTHREADS) ((uint4 *) kpair_sh)[i] = ((const uint4 *) oscar_tcq_pair8_dev<BK>())[i];
    }
    if constexpr (BV != 4) {
        const float * cb = oscar_tcq_cb_dev<BV>();
        for (int i = tid; i < OSCAR_TCQ_PAIRS(BV); i += NTHREADS) {
            vpair_sh[i] = __floats2half2_rn(cb[i & (OSCAR_TCQ_STATES - 1)], cb[i >> BV]);
        }
    }

    // Q -> int8 per (head, 64-block), laid out in pair_elem's element order for this thread's K block.
    float * Qf = (float *) smem;
    for (int i = tid; i < G * D; i += NTHREADS) {
        const int g = i / D;
        Qf[i] = g < ng ? scale * ((const float *) (Q + nb03 * seq + nb02 * (head0 + g)))[i % D] : 0.0f;
    }
    __syncthreads();
    if (tid < G * NBLK) {
        float amax = 0.0f;
        for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(Qf[(tid / NBLK) * D + (tid % NBLK) * 64 + i]));
        dq_sh[tid / NBLK][tid % NBLK] = amax / 127.0f;
    }
    __syncthreads();
    const int kblk = tid % NBLK;
    int   Qi[G][16];
    float dqu[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float dq  = dq_sh[g][kblk];
        const float inv = dq > 0.0f ? 1.0f / dq : 0.0f;
        dqu[g] = dq * unit_K;
#pragma unroll
        for (int j = 0; j < 16; j++) {
            uint32_t w = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float x = Qf[g * D + kblk * 64 + pair_elem<BK>(j / 2, 4 * (j % 2) + k)];
                w |= uint32_t(uint8_t(int8_t(__float2int_rn(x * inv)))) << (8 * k);
            }
            Qi[g][j] = (int) w;
        }
    }
    float slope[G];
#pragma unroll
    for (int g = 0; g < G; g++) slope[g] = get_alibi_slope(max_bias, head0 + g, n_head_log2, m0, m1);
    __syncthreads();  // Qf is overwritten by S below

    const int vslot = tid % TPR, vrs = tid / TPR;
    const int vblk  = vslot / 8, vp = vslot % 8;
    float  acc[G][8] = {};
    half2  acch[G][4];
    float  m_run = -FLT_MAX / 2.0f, l_run = 0.0f;  // softmax state of query warp (warp < G)

    // Split y takes units [y u / splits, (y + 1) u / splits) of split_rows rows, walked in tiles of T rows;
    // the loops stop at the split's end, so a short split costs a short time.
    const int nunits    = (ne11 + split_rows - 1) / split_rows;
    const int row_begin = (int) ((int64_t) blockIdx.y * nunits / gridDim.y) * split_rows;
    const int row_end   = min(ne11, (int) ((int64_t) (blockIdx.y + 1) * nunits / gridDim.y) * split_rows);
    for (int r0 = row_begin; r0 < row_end; r0 += T) {
        const int n = min(T, row_end - r0);  // rows of this tile
        if (r0 + T < row_end) {  // pull the next tile towards L2 while this one is computed
            for (int r = tid; r < T; r += NTHREADS) {
                const int row = r0 + T + r;
                if (row < row_end) { prefetch_l2(Kh + row * nb11); prefetch_l2(Vh + row * nb21); }
            }
        }

        // K.Q: one thread per (row, 64-block), G dots each, summed over the row's blocks by shuffles.
#pragma unroll
        for (int pass = 0; pass < T / RP; pass++) {
            if (pass * RP >= n) break;
            const int rl  = pass * RP + tid / NBLK;
            const int row = min(r0 + rl, row_end - 1);
            const uint8_t * kb = Kh + row * nb11 + kblk * BBK;
            uint32_t c[2 * BK];
            load_words<2 * BK>(kb + 2, c);
            const float dk = __half2float(__ushort_as_half((unsigned short) load_u16(kb)));
            int dot[G] = {};
#pragma unroll
            for (int p = 0; p < 8; p++) {
                uint32_t v0, v1;
                if constexpr (BK == 4) {
                    oscar4_pair_decode<0>(c[p], v0, v1);
                } else {  // elements 8p .. 8p + 7
                    uint16_t t[4];
                    tcq_pairs<BK>(kpair_sh, tcq_piece<BK>(c, p), t);
                    v0 = __byte_perm(t[0], t[1], 0x5410);
                    v1 = __byte_perm(t[2], t[3], 0x5410);
                }
#pragma unroll
                for (int g = 0; g < G; g++) {
                    dot[g] = ggml_cuda_dp4a((int) v0, Qi[g][2 * p], dot[g]);
                    dot[g] = ggml_cuda_dp4a((int) v1, Qi[g][2 * p + 1], dot[g]);
                }
            }
            const float mv = mh && kblk == 0 ? __half2float(mh[row]) : 0.0f;
#pragma unroll
            for (int g = 0; g < G; g++) {
                float s = dk * dqu[g] * float(dot[g]);
#pragma unroll
                for (int off = 1; off < NBLK; off <<= 1) s += __shfl_xor_sync(0xFFFFFFFF, s, off, WARP_SIZE);
                if (kblk == 0) S[g * T + rl] = rl < n ? s + slope[g] * mv : -INFINITY;
            }
        }
        __syncthreads();

        // Online softmax, one warp per query head: weights times the V block scales for the V pass.
        if (warp < G) {
            const int g = warp;
            float s[T / WARP_SIZE];
            float smax = -FLT_MAX / 2.0f;
#pragma unroll
            for (int i = 0; i < T / WARP_SIZE; i++) {
                s[i] = lane + i * WARP_SIZE < n ? S[g * T + lane + i * WARP_SIZE] : -INFINITY;  // past n: stale
                smax = fmaxf(smax, s[i]);
            }
            smax = warp_reduce_max(smax);
            const float m_new = fmaxf(m_run, smax);
            const float alpha = expf(m_run - m_new);
            m_run = m_new;
            l_run *= alpha;
#pragma unroll
            for (int i = 0; i < T / WARP_SIZE; i++) {
                const int rl  = lane + i * WARP_SIZE;
                const int row = min(r0 + rl, row_end - 1);
                const float pw = expf(s[i] - m_new);
                l_run += pw;
#pragma unroll
                for (int b = 0; b < NBLK; b++) {
                    const float dv = __half2float(__ushort_as_half((unsigned short) load_u16(Vh + row * nb21 + b * BBV)));
                    W[(rl * NBLK + b) * G + g] = __float2half2_rn(pw * dv * unit_V);
                }
            }
            if (lane == 0) alpha_sh[g] = alpha;
        }
        __syncthreads();

        // V: each thread adds 8 columns (one code pair of one block) of T / RS rows for all G heads.
#pragma unroll
        for (int g = 0; g < G; g++) {
#pragma unroll
            for (int k = 0; k < 4; k++) acch[g][k] = make_half2(0.0f, 0.0f);
        }
#pragma unroll 8
        for (int rr = 0; rr < T / RS; rr++) {
            if (rr * RS >= n) break;
            const int rl  = vrs + rr * RS;
            const int row = min(r0 + rl, row_end - 1);  // weight 0 past the end
            const uint8_t * vc = Vh + row * nb21 + vblk * BBV + 2;
            half2 v[4];
            if constexpr (BV != 4) {  // elements 8 vp .. 8 vp + 7
                tcq_pairs<BV>(vpair_sh, tcq_load_piece<BV>(vc, vp), v);
            } else {
                uint32_t v0, v1;
                oscar4_pair_decode<128>(load_u16(vc + 4 * vp) | (load_u16(vc + 4 * vp + 2) << 16), v0, v1);
                v[0] = oscar_level_pair_h2(v0, 0); v[1] = oscar_level_pair_h2(v0, 1);
                v[2] = oscar_level_pair_h2(v1, 0); v[3] = oscar_level_pair_h2(v1, 1);
            }
            const half2 * w = W + (rl * NBLK + vblk) * G;
#pragma unroll
            for (int g = 0; g < G; g++) {
                const half2 wg = w[g];
#pragma unroll
                for (int k = 0; k < 4; k++) acch[g][k] = __hfma2(v[k], wg, acch[g][k]);
            }
        }
#pragma unroll
        for (int g = 0; g < G; g++) {
            const float a = alpha_sh[g];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float2 f = __half22float2(acch[g][k]);
                acc[g][2 * k]     = acc[g][2 * k]     * a + f.x;
                acc[g][2 * k + 1] = acc[g][2 * k + 1] * a + f.y;
            }
        }
        // No barrier needed here: S, W and alpha_sh are next written after the next K pass's barrier.
    }

    // Sum the row slots' partial outputs, then normalise (one split) or hand (max, sum) to the combine kernel.
    __syncthreads();
    float * red = (float *) smem;  // [RS][G][D]
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
        for (int k = 0; k < 8; k++) red[(vrs * G + g) * D + vblk * 64 + pair_elem<BV>(vp, k)] = acc[g][k];
    }
    if (warp < G) {
        const float l = warp_reduce_sum(l_run);
        if (lane == 0) { max_sh[warp] = m_run; sum_sh[warp] = l; }
    }
    __syncthreads();
    for (int i = tid; i < G * D; i += NTHREADS) {
        const int g = i / D, d = i % D;
        if (g >= ng) continue;
        float v = 0.0f;
#pragma unroll
        for (int r = 0; r < RS; r++) v += red[(r * G + g) * D + d];
        const int64_t j = (int64_t) seq * ne02 + head0 + g;  // output row (one query token)
        if (nparts == 1) {
            dst[j * D + d] = v / sum_sh[g];
        } else {  // part y of nparts (the f16 tier's pieces, when there is one, follow the splits)
            dst[(j * nparts + blockIdx.y) * D + d] = v;
            if (d == 0) dst_meta[j * nparts + blockIdx.y] = make_float2(max_sh[g], sum_sh[g]);
        }
    }
}

} // namespace oscar_dec

// Host side: grid, KV split and the combine step. Instances live in template-instances/fattn-vec-instance-*.cu.
template <int D, int BK, int BV, int G>
void ggml_cuda_flash_attn_ext_oscar_decode(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * Q    = dst->src[0];
    const ggml_tensor * K    = dst->src[1];
    const ggml_tensor * V    = dst->src[2];
    const ggml_tensor * mask = dst->src[3];

    float scale, max_bias;
    memcpy(&scale,    (const float *) dst->op_params + 0, sizeof(float));
    memcpy(&max_bias, (const float *) dst->op_params + 1, sizeof(float));
    const uint32_t n_head      = Q->ne[2];
    const uint32_t n_head_log2 = 1u << uint32_t(floorf(log2f(float(n_head))));
    const float m0 = powf(2.0f, -(max_bias       ) / n_head_log2);
    const float m1 = powf(2.0f, -(max_bias / 2.0f) / n_head_log2);

    const int gqa    = Q->ne[2] / K->ne[2];
    const int ntg    = (gqa + G - 1) / G;
    const int groups = K->ne[2] * ntg * Q->ne[3];

    auto kernel = oscar_dec::flash_attn_oscar_decode<D, BK, BV, G>;
    const int id  = ggml_cuda_get_device();
    const int nsm = ggml_cuda_info().devices[id].nsm;
    int bps = 1;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&bps, kernel, oscar_dec::NTHREADS, 0));
    // One wave of blocks: as many KV splits as fit next to the head groups (a partial second wave of
    // equal blocks would idle most SMs for its length). A split is whole tiles when there are enough of them
    // (a partial tile per split cost 8 % at 128K), else whole SPLIT_ROWS units. OSCAR_DECODE_SPLITS caps the
    // split count (1: one block walks the whole KV length; the GPU check runs the tests that way too).
    static const int max_splits = [] { const char * e = getenv("OSCAR_DECODE_SPLITS"); return e ? std::max(1, atoi(e)) : INT_MAX; }();
    constexpr int T    = oscar_dec::TILE_ELEMS / D;
    const int most     = std::min(max_splits, std::max(1, nsm * std::max(bps, 1) / groups));
    const int unit     = (K->ne[1] + T - 1) / T >= most ? T : oscar_dec::SPLIT_ROWS;
    const int nsplit   = std::min(most, (int) ((K->ne[1] + unit - 1) / unit));

    const ggml_tensor * K2 = dst->src[5], * V2 = dst->src[6], * M2 = dst->src[7];
    const int ntier  = K2 ? (int) ((K2->ne[1] + oscar_tier_cuda::ROWS - 1) / oscar_tier_cuda::ROWS) : 0;
    const int nparts = nsplit + ntier;  // the f16 tier's pieces are more parts of the softmax

    ggml_cuda_pool & pool = ctx.pool();
    cudaStream_t stream = ctx.stream();
    ggml_cuda_pool_alloc<float>  dst_tmp(pool);
    ggml_cuda_pool_alloc<float2> dst_meta(pool);
    if (nparts > 1) {
        dst_tmp.alloc(nparts * ggml_nelements(dst));
        dst_meta.alloc(nparts * ggml_nrows(dst));
    }

    kernel<<<dim3(groups, nsplit, 1), dim3(oscar_dec::NTHREADS, 1, 1), 0, stream>>>(
        (const char *) Q->data, (const char *) K->data, (const char *) V->data, mask ? (const char *) mask->data : nullptr,
        nparts > 1 ? dst_tmp.ptr : (float *) dst->data, dst_meta.ptr,
        scale, max_bias, m0, m1, n_head_log2,
        (int) Q->ne[2], (int) K->ne[2], (int) K->ne[1], ntg, unit, nparts,
        Q->nb[2], Q->nb[3], K->nb[1], K->nb[2], K->nb[3], V->nb[1], V->nb[2], V->nb[3],
        mask ? (int) mask->ne[3] : 1, mask ? mask->nb[3] : 0);
    CUDA_CHECK(cudaGetLastError());

    if (ntier > 0) {
        oscar_tier_cuda::decode_part<D, D><<<dim3(Q->ne[2], Q->ne[3], ntier), dim3(oscar_tier_cuda::NTHREADS, 1, 1), 0, stream>>>(
            (const char *) Q->data, (const char *) K2->data, (const char *) V2->data, (const char *) M2->data,
            dst_tmp.ptr, dst_meta.ptr, nparts, nsplit,
            scale, max_bias, m0, m1, n_head_log2,
            (int) Q->ne[2], (int) K2->ne[2], (int) K2->ne[1], Q->nb[2], Q->nb[3],
            K2->nb[1], K2->nb[2], K2->nb[3], V2->nb[1], V2->nb[2], V2->nb[3], (int) M2->ne[3], M2->nb[3]);
        CUDA_CHECK(cudaGetLastError());
    }

    if (nparts > 1) {
        const ggml_cuda_kernel_launch_params launch_params = ggml_cuda_kernel_launch_params(
            dim3(Q->ne[1], Q->ne[2], Q->ne[3]), dim3(D, 1, 1), nparts * sizeof(float2), stream);
        ggml_cuda_kernel_launch(flash_attn_combine_results<D>, launch_params, dst_tmp.ptr, dst_meta.ptr, (float *) dst->data, nparts);
        CUDA_CHECK(cudaGetLastError());
    }
}

#define DECL_FATTN_OSCAR_DECODE_CASE(D, BK, BV, G) \
    template void ggml_cuda_flash_attn_ext_oscar_decode<D, BK, BV, G>(ggml_backend_cuda_context & ctx, ggml_tensor * dst)

#define DECL_FATTN_OSCAR_DECODE_CASES(BK, BV) \
    DECL_FATTN_OSCAR_DECODE_CASE( 64, BK, BV, 1); DECL_FATTN_OSCAR_DECODE_CASE( 64, BK, BV, 2); DECL_FATTN_OSCAR_DECODE_CASE( 64, BK, BV, 4); \
    DECL_FATTN_OSCAR_DECODE_CASE(128, BK, BV, 1); DECL_FATTN_OSCAR_DECODE_CASE(128, BK, BV, 2); DECL_FATTN_OSCAR_DECODE_CASE(128, BK, BV, 4); \
    DECL_FATTN_OSCAR_DECODE_CASE(256, BK, BV, 1); DECL_FATTN_OSCAR_DECODE_CASE(256, BK, BV, 2); DECL_FATTN_OSCAR_DECODE_CASE(256, BK, BV, 4)

#define EXTERN_FATTN_OSCAR_DECODE_CASES(BK, BV) \
    extern DECL_FATTN_OSCAR_DECODE_CASE( 64, BK, BV, 1); extern DECL_FATTN_OSCAR_DECODE_CASE( 64, BK, BV, 2); extern DECL_FATTN_OSCAR_DECODE_CASE( 64, BK, BV, 4); \
    extern DECL_FATTN_OSCAR_DECODE_CASE(128, BK, BV, 1); extern DECL_FATTN_OSCAR_DECODE_CASE(128, BK, BV, 2); extern DECL_FATTN_OSCAR_DECODE_CASE(128, BK, BV, 4); \
    extern DECL_FATTN_OSCAR_DECODE_CASE(256, BK, BV, 1); extern DECL_FATTN_OSCAR_DECODE_CASE(256, BK, BV, 2); extern DECL_FATTN_OSCAR_DECODE_CASE(256, BK, BV, 4)

#if GGML_CUDA_FA_OSCAR2_OSCAR2
EXTERN_FATTN_OSCAR_DECODE_CASES(2, 2);
#endif
#if GGML_CUDA_FA_OSCAR3_OSCAR3
EXTERN_FATTN_OSCAR_DECODE_CASES(3, 3);
#endif
#if GGML_CUDA_FA_OSCAR4_OSCAR4
EXTERN_FATTN_OSCAR_DECODE_CASES(4, 4);
#endif
#if GGML_CUDA_FA_OSCAR3_OSCAR2
EXTERN_FATTN_OSCAR_DECODE_CASES(3, 2);
#endif

// fattn.cu's entry: true when this kernel took the op (one query token, an OScaR pair compiled in, no
// soft-capping or attention sinks); otherwise the caller runs upstream's vec kernel.
static inline bool ggml_cuda_flash_attn_ext_oscar(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * Q = dst->src[0];
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    float softcap;
    memcpy(&softcap, (const float *) dst->op_params + 2, sizeof(float));
    if (Q->ne[1] != 1 || dst->src[4] || softcap != 0.0f || V->ne[0] != Q->ne[0] || (mask && mask->ne[2] != 1)) {
        return false;
    }
    auto bits = [](ggml_type t) { return t == GGML_TYPE_OSCAR2 ? 2 : t == GGML_TYPE_OSCAR3 ? 3 : t == GGML_TYPE_OSCAR4 ? 4 : 0; };
    const int D = Q->ne[0], bk = bits(K->type), bv = bits(V->type);
    const int gqa = Q->ne[2] / K->ne[2];
    const int G = gqa == 1 ? 1 : gqa == 2 ? 2 : 4;
#define OSCAR_DECODE_CASE(D_, BK_, BV_, G_) \
    if (D == D_ && bk == BK_ && bv == BV_ && G == G_) { ggml_cuda_flash_attn_ext_oscar_decode<D_, BK_, BV_, G_>(ctx, dst); return true; }
#define OSCAR_DECODE_CASES(BK_, BV_) \
    OSCAR_DECODE_CASE( 64, BK_, BV_, 1) OSCAR_DECODE_CASE( 64, BK_, BV_, 2) OSCAR_DECODE_CASE( 64, BK_, BV_, 4) \
    OSCAR_DECODE_CASE(128, BK_, BV_, 1) OSCAR_DECODE_CASE(128, BK_, BV_, 2) OSCAR_DECODE_CASE(128, BK_, BV_, 4) \
    OSCAR_DECODE_CASE(256, BK_, BV_, 1) OSCAR_DECODE_CASE(256, BK_, BV_, 2) OSCAR_DECODE_CASE(256, BK_, BV_, 4)
#if GGML_CUDA_FA_OSCAR2_OSCAR2
    OSCAR_DECODE_CASES(2, 2)
#endif
#if GGML_CUDA_FA_OSCAR3_OSCAR3
    OSCAR_DECODE_CASES(3, 3)
#endif
#if GGML_CUDA_FA_OSCAR4_OSCAR4
    OSCAR_DECODE_CASES(4, 4)
#endif
#if GGML_CUDA_FA_OSCAR3_OSCAR2
    OSCAR_DECODE_CASES(3, 2)
#endif
#undef OSCAR_DECODE_CASES
#undef OSCAR_DECODE_CASE
    return false;
}
