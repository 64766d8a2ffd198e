// The f16 tier of protected tokens in ggml-cuda's flash attention: the second K/V source that
// ggml_flash_attn_ext_add_tier puts in src[5..7] (K2, V2 F16 [D, n2, kv heads, ne3], mask2 F16 [n2, >= n_q, 1, ne3]).
//   Decode (one query token, an OScaR pair the grouped decode kernel serves): the tier's 32-row pieces are more
//   parts next to the decode kernel's KV splits, and flash_attn_combine_results merges them (one softmax, the main
//   cache read in place).
//   Everything else (prefill, sinks, soft-capping, other types): the main K/V are converted to f16 (what upstream's
//   prefill does anyway), the tier's rows appended behind them in one view, the masks put side by side, and
//   upstream's kernels run once over the whole.
#pragma once

namespace oscar_tier_cuda {

constexpr int NTHREADS = 128;
constexpr int ROWS     = 32;  // tier rows per block: each block is one part of the combine

// Grid (query head, sequence, ROWS-row piece of the tier) for a one-token query: that piece's part of the softmax,
// parts[(j nparts + part) DV + d] = sum_r exp(s_r - m) V2[r][d] and meta = (m, sum_r exp(s_r - m)), j = seq ne02 + head,
// part = part0 + piece: the layout flash_attn_combine_results reads (natural-log units, like the decode kernel).
// The rows of a piece are loaded at once (a row per warp at a time would wait on memory once per row).
template <int DK, int DV>
__launch_bounds__(NTHREADS, 1)
static __global__ void decode_part(
        const char * __restrict__ Q, const char * __restrict__ K2, const char * __restrict__ V2, const char * __restrict__ M2,
        float * __restrict__ parts, float2 * __restrict__ meta, const int nparts, const int part0,
        const float scale, const float max_bias, const float m0, const float m1, const uint32_t n_head_log2,
        const int ne02, const int ne12, const int n2,
        const int64_t nb02, const int64_t nb03,
        const int64_t nbk1, const int64_t nbk2, const int64_t nbk3,
        const int64_t nbv1, const int64_t nbv2, const int64_t nbv3,
        const int nem3, const int64_t nbm3) {
    constexpr int NW = NTHREADS / WARP_SIZE;
    constexpr int RW = ROWS / NW;              // K phase: rows per warp
    constexpr int KP = DK / (2 * WARP_SIZE);   //          half2 of a row per lane
    constexpr int CP = DV / 2;                 // V phase: column pairs, one per thread
    constexpr int VG = NTHREADS / CP;          //          row groups
    constexpr int RG = ROWS / VG;              //          rows per group
    static_assert(KP >= 1 && VG >= 1 && ROWS % NW == 0 && ROWS % VG == 0, "tier decode shape");
    __shared__ float  s[ROWS];
    __shared__ float2 red[VG][CP];

    const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
    const int head = blockIdx.x, seq = blockIdx.y, r0 = blockIdx.z * ROWS, n = min(ROWS, n2 - r0);
    const int kvh = head / (ne02 / ne12);
    const float slope = get_alibi_slope(max_bias, head, n_head_log2, m0, m1);
    const half * mrow = M2 ? (const half *) (M2 + nbm3 * (seq % nem3)) + r0 : nullptr;
    const char * kh = K2 + nbk3 * seq + nbk2 * kvh + nbk1 * r0;
    const char * vh = V2 + nbv3 * seq + nbv2 * kvh + nbv1 * r0;

    const float2 * qp = (const float2 *) (Q + nb03 * seq + nb02 * head) + lane * KP;
    float2 q[KP];
#pragma unroll
    for (int i = 0; i < KP; i++) q[i] = qp[i];

    half2 k[RW][KP];
#pragma unroll
    for (int i = 0; i < RW; i++) {
        const int r = warp * RW + i;
#pragma unroll
        for (int c = 0; c < KP; c++) k[i][c] = r < n ? __ldg((const half2 *) (kh + nbk1 * r) + lane * KP + c) : make_half2(0.0f, 0.0f);
    }
#pragma unroll
    for (int i = 0; i < RW; i++) {
        const int r = warp * RW + i;
        float dot = 0.0f;
#pragma unroll
        for (int c = 0; c < KP; c++) {
            const float2 kf = __half22float2(k[i][c]);
            dot += q[c].x * kf.x + q[c].y * kf.y;
        }
        dot = warp_reduce_sum(dot);
        if (lane == 0) s[r] = r < n ? scale * dot + (mrow ? slope * __half2float(mrow[r]) : 0.0f) : -INFINITY;
    }
    __syncthreads();

    float m = -FLT_MAX / 2.0f;
#pragma unroll
    for (int r = 0; r < ROWS; r++) m = fmaxf(m, s[r]);
    float l = 0.0f;
#pragma unroll
    for (int r = 0; r < ROWS; r++) l += expf(s[r] - m);  // 0 for masked rows (-inf)

    const int cp = tid % CP, g = tid / CP;
    half2 v[RG];
#pragma unroll
    for (int i = 0; i < RG; i++) {
        const int r = g * RG + i;
        v[i] = r < n ? __ldg((const half2 *) (vh + nbv1 * r) + cp) : make_half2(0.0f, 0.0f);
    }
    float2 acc = make_float2(0.0f, 0.0f);
#pragma unroll
    for (int i = 0; i < RG; i++) {
        const float p = expf(s[g * RG + i] - m);
        const float2 vf = __half22float2(v[i]);
        acc.x += p * vf.x;
        acc.y += p * vf.y;
    }
    red[g][cp] = acc;
    __syncthreads();
    if (g == 0) {
#pragma unroll
        for (int h = 1; h < VG; h++) { acc.x += red[h][cp].x; acc.y += red[h][cp].y; }
        const int64_t j = (int64_t) seq * ne02 + head, part = part0 + blockIdx.z;
        ((float2 *) (parts + (j * nparts + part) * DV))[cp] = acc;
        if (cp == 0) meta[j * nparts + part] = make_float2(m, l);
    }
}

// dst rows [r0, r0 + gridDim.x) of every (head, stream) of a [D, n, H, S] f16 view (row stride H D, head stride D)
// from src rows [0, gridDim.x) of an f16 tensor with strides (bytes); rows past src's n_src are zeros (padding, masked).
static __global__ void copy_rows_f16(const char * __restrict__ src, half * __restrict__ dst, const int D, const int H,
        const int64_t n, const int r0, const int n_src, const int64_t nbs1, const int64_t nbs2, const int64_t nbs3) {
    const int r = r0 + blockIdx.x, h = blockIdx.y, st = blockIdx.z;
    half * y = dst + (((int64_t) st * n + r) * H + h) * D;
    const half * x = (const half *) (src + nbs3 * st + nbs2 * h + nbs1 * (r - r0));
    const bool have = r - r0 < n_src;
    for (int d = threadIdx.x; d < D; d += blockDim.x) y[d] = have ? x[d] : __float2half(0.0f);
}

// Masks side by side: columns [0, nk) from the main mask (0 without one), [nk, nk + n2) from the tier's mask (-inf
// for query rows it does not have), the rest -inf.
static __global__ void concat_masks(const char * __restrict__ m1, const char * __restrict__ m2, half * __restrict__ dst,
        const int64_t nc, const int nk, const int n2,
        const int64_t nb11, const int ne13, const int64_t nb13, const int ne21, const int64_t nb21, const int ne23, const int64_t nb23) {
    const int row = blockIdx.x, st = blockIdx.y;
    half * y = dst + ((int64_t) st * gridDim.x + row) * nc;
    const half * a = m1 ? (const half *) (m1 + nb13 * (st % ne13) + nb11 * row) : nullptr;
    const half * b = row < ne21 ? (const half *) (m2 + nb23 * (st % ne23) + nb21 * row) : nullptr;
    const half ninf = __float2half(-INFINITY);
    for (int64_t c = threadIdx.x; c < nc; c += blockDim.x) {
        y[c] = c < nk ? (a ? a[c] : __float2half(0.0f)) : c < nk + n2 ? (b ? b[c - nk] : ninf) : ninf;
    }
}

// f16 [D, nk + n2 padded, H, S] view of main rows then tier rows, written into buf (rows of all heads interleaved,
// so one to_fp16_nc per stream converts the main part).
static inline void concat_kv(const ggml_tensor * t, const ggml_tensor * t2, half * buf, const int64_t n, cudaStream_t stream,
        ggml_tensor & view) {
    const int64_t D = t->ne[0], nk = t->ne[1], H = t->ne[2], S = t->ne[3];
    if (t->type == GGML_TYPE_F16) {
        copy_rows_f16<<<dim3(nk, H, S), 128, 0, stream>>>((const char *) t->data, buf, D, H, n, 0, nk, t->nb[1], t->nb[2], t->nb[3]);
    } else {
        const size_t ts = ggml_type_size(t->type);
        GGML_ASSERT(t->nb[0] == ts && "oscar tier: main K/V rows must be contiguous");
        const to_fp16_nc_cuda_t to_fp16 = ggml_get_to_fp16_nc_cuda(t->type);
        GGML_ASSERT(to_fp16 != nullptr);
        for (int64_t st = 0; st < S; st++) {  // source dims (D, H, nk): the output is [D, H, nk], i.e. rows of all heads
            to_fp16((const char *) t->data + st * t->nb[3], buf + st * n * H * D, D, H, nk, 1, t->nb[2] / ts, t->nb[1] / ts, 0, stream);
        }
    }
    copy_rows_f16<<<dim3(n - nk, H, S), 128, 0, stream>>>((const char *) t2->data, buf, D, H, n, nk, t2->ne[1], t2->nb[1], t2->nb[2], t2->nb[3]);
    CUDA_CHECK(cudaGetLastError());

    view = *t;
    view.type = GGML_TYPE_F16;
    view.data = buf;
    view.view_src = nullptr;
    view.view_offs = 0;
    view.ne[1] = n;
    view.nb[0] = sizeof(half);
    view.nb[2] = D * sizeof(half);
    view.nb[1] = H * view.nb[2];
    view.nb[3] = n * view.nb[1];
}

} // namespace oscar_tier_cuda

// supports_op: the tier rows are F16 with contiguous rows, its mask F16 with one head plane; the main part any
// case ggml_cuda_flash_attn_ext_supported takes (its f16 conversion always exists there). Others run on the CPU.
static inline bool ggml_cuda_flash_attn_ext_tier_supported(const ggml_tensor * op) {
    const ggml_tensor * k2 = op->src[5], * v2 = op->src[6], * m2 = op->src[7];
    float softcap;
    memcpy(&softcap, (const float *) op->op_params + 2, sizeof(float));
    const int64_t D = op->src[0]->ne[0];  // upstream's f16 MMA kernel soft-caps these head sizes only
    if (softcap != 0.0f && D != 128 && D != 256 && D != 512) {
        return false;
    }
    return k2->type == GGML_TYPE_F16 && v2->type == GGML_TYPE_F16 && k2->nb[0] == sizeof(half) && v2->nb[0] == sizeof(half) &&
           m2->type == GGML_TYPE_F16 && m2->ne[2] == 1 && op->src[1]->ne[3] == op->src[0]->ne[3] &&
           (op->src[1]->type == GGML_TYPE_F16 || op->src[1]->nb[0] == ggml_type_size(op->src[1]->type)) &&
           (op->src[2]->type == GGML_TYPE_F16 || op->src[2]->nb[0] == ggml_type_size(op->src[2]->type));
}

static inline bool ggml_cuda_flash_attn_ext_oscar(ggml_backend_cuda_context & ctx, ggml_tensor * dst);  // oscar_fattn.cuh
void ggml_cuda_flash_attn_ext(ggml_backend_cuda_context & ctx, ggml_tensor * dst);                    // fattn.cu

// fattn.cu's entry for an op with a tier: the grouped decode kernel when it takes the op (it adds the tier's
// parts), else one upstream flash attention over the f16 concatenation.
static inline void ggml_cuda_flash_attn_ext_tier(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    if (ggml_cuda_flash_attn_ext_oscar(ctx, dst)) {
        return;
    }
    const ggml_tensor * Q = dst->src[0], * K = dst->src[1], * V = dst->src[2], * M = dst->src[3];
    const ggml_tensor * K2 = dst->src[5], * V2 = dst->src[6], * M2 = dst->src[7];
    const int64_t nk = K->ne[1], n2 = K2->ne[1];
    const int64_t n  = GGML_PAD(nk + n2, FATTN_KQ_STRIDE);  // padded like a KV cache: upstream's fast paths need it
    const int64_t nq = M ? M->ne[1] : Q->ne[1], nm3 = std::max(M ? M->ne[3] : 1, M2->ne[3]);

    ggml_cuda_pool & pool = ctx.pool();
    cudaStream_t stream = ctx.stream();
    ggml_cuda_pool_alloc<half> kbuf(pool, K->ne[0] * n * K->ne[2] * K->ne[3]);
    ggml_cuda_pool_alloc<half> vbuf(pool, V->ne[0] * n * V->ne[2] * V->ne[3]);
    ggml_cuda_pool_alloc<half> mbuf(pool, n * nq * nm3);

    ggml_tensor k, v, m;
    oscar_tier_cuda::concat_kv(K, K2, kbuf.ptr, n, stream, k);
    oscar_tier_cuda::concat_kv(V, V2, vbuf.ptr, n, stream, v);
    oscar_tier_cuda::concat_masks<<<dim3(nq, nm3), 256, 0, stream>>>(
        M ? (const char *) M->data : nullptr, (const char *) M2->data, mbuf.ptr, n, nk, n2,
        M ? M->nb[1] : 0, M ? M->ne[3] : 1, M ? M->nb[3] : 0, M2->ne[1], M2->nb[1], M2->ne[3], M2->nb[3]);
    CUDA_CHECK(cudaGetLastError());
    m = *M2;
    m.data = mbuf.ptr;
    m.view_src = nullptr;
    m.view_offs = 0;
    m.ne[0] = n; m.ne[1] = nq; m.ne[2] = 1; m.ne[3] = nm3;
    m.nb[0] = sizeof(half); m.nb[1] = n * sizeof(half); m.nb[2] = m.nb[3] = n * nq * sizeof(half);

    ggml_tensor fa = *dst;
    fa.src[1] = &k;
    fa.src[2] = &v;
    fa.src[3] = &m;
    fa.src[5] = fa.src[6] = fa.src[7] = nullptr;
    ggml_cuda_flash_attn_ext(ctx, &fa);
}
