// oscar2 and oscar3 (the bitshift trellis codes) on CUDA against the CPU, exactly: the bytes CUDA's SET_ROWS and CPY
// F32 -> oscarN write must be the bytes the CPU writes (ggml_quantize_chunk, i.e. native oscarN_quantize_row), block
// for block, and every CUDA decoder (GET_ROWS, CPY oscarN -> F32, convert.cu's to_fp32/to_fp16/to_bf16, contiguous
// and not) must give the CPU's decode (type traits to_float; halves and bfloat16s rounded from it to nearest even).
// test-backend-ops compares SET_ROWS by NMSE, which a different path of similar error would pass; this does not.
//
// Rows: random Gaussian at many scales, adversarial blocks (zeros, -0, NaN, +-Inf, FLT_MAX, subnormals, huge and
// tiny norms, constant / periodic / mirrored / one-hot rows full of cost ties) and real-looking ones (heavy tails,
// outlier channels, offsets, fp16-rounded values, values on the trellis' own codebook paths).
//
// Built and run on the GPU machine by scripts/gpu_run.sh stage tcq (nvcc, against the built ggml libraries):
//   nvcc -std=c++17 -O2 scripts/gpu_tcq_check.cpp -I GGML/include -I native -L LIBDIR -lggml -lggml-base -lggml-cuda \
//        -Xlinker -rpath=LIBDIR -ldl -o gpu_tcq_check && ./gpu_tcq_check [LIBDIR/libggml-cuda.so]
// Prints one line per check and "N passed, M failed"; exit status 1 when anything differs.
// -DOSCAR_CHECK_ON_CPU builds a self-test of this program without CUDA: the same graphs on the CPU backend (linked
// with -lggml-cpu), the converters left out.
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#ifdef OSCAR_CHECK_ON_CPU
#include "ggml-cpu.h"
#else
#include "ggml-cuda.h"
#include <cuda_runtime.h>
#endif

#include "oscar_tcq_codebook.h"

#include <dlfcn.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

static const int QK = 64;  // elements of a block

// The codes checked: ggml type (the patched ggml.h, patches/0001), bits per element s (a block is 2 + 8s bytes: the
// fp16 scale, then a circular stream of 64s bits) and codebook.
static const float cb2[256] = { OSCAR_TCQ2_CODEBOOK }, cb3[256] = { OSCAR_TCQ3_CODEBOOK };
struct code {
    ggml_type     type;
    int           s;
    const char *  name;
    const float * cb;
    int bytes() const { return 2 + 8 * s; }
};
static const code CODES[] = { { GGML_TYPE_OSCAR2, 2, "oscar2", cb2 }, { GGML_TYPE_OSCAR3, 3, "oscar3", cb3 } };

static int n_pass = 0, n_fail = 0;

static void report(const std::string & what, long bad, long total, const std::string & first) {
    if (bad == 0) {
        n_pass++;
        printf("ok    %-60s %ld compared\n", what.c_str(), total);
    } else {
        n_fail++;
        printf("FAIL  %-60s %ld of %ld differ; first: %s\n", what.c_str(), bad, total, first.c_str());
    }
}

// ---- input blocks ------------------------------------------------------------------------------------------------

struct blocks {
    std::vector<float>       x;      // 64 per block
    std::vector<std::string> label;  // per block
    void add(const std::string & l, const std::vector<float> & b) {
        x.insert(x.end(), b.begin(), b.end());
        label.push_back(l);
    }
    int n() const { return (int) label.size(); }
};

static float subnormal(std::mt19937_64 & rng) {  // a random nonzero subnormal float of random sign
    uint32_t m = 1 + (uint32_t) (rng() % 0x7fffff);
    uint32_t b = m | (rng() & 1 ? 0x80000000u : 0u);
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static float to_f16_and_back(float f) { return ggml_fp16_to_fp32(ggml_fp32_to_fp16(f)); }

static blocks make_blocks(const code & c) {
    blocks B;
    std::mt19937_64 rng(20261203);
    std::normal_distribution<float> N(0.0f, 1.0f);
    std::uniform_real_distribution<float> U(-1.0f, 1.0f);
    auto gen = [&](const std::string & l, int count, const std::function<float(int)> & f) {
        for (int i = 0; i < count; i++) {
            std::vector<float> b(QK);
            for (int j = 0; j < QK; j++) b[j] = f(j);
            B.add(l, b);
        }
    };
    // Gaussian at many scales (the squares reach both ends of float, the sums are double)
    const float scales[] = { 1.0f, 1e-3f, 1e3f, 1e-20f, 1e20f, 1e-35f, 3e37f, 3e38f / 8.0f };
    for (float s : scales) gen("gauss x" + std::to_string(s), s == 1.0f ? 1200 : 60, [&](int) { return s * N(rng); });
    // special values
    gen("zeros", 2, [](int) { return 0.0f; });
    gen("-0", 2, [](int) { return -0.0f; });
    for (int pos : { 0, 17, 63 }) {
        gen("NaN at " + std::to_string(pos), 3, [&](int j) { return j == pos ? NAN : N(rng); });
        gen("+Inf at " + std::to_string(pos), 3, [&](int j) { return j == pos ? INFINITY : N(rng); });
        gen("-Inf at " + std::to_string(pos), 3, [&](int j) { return j == pos ? -INFINITY : N(rng); });
    }
    gen("+Inf and -Inf", 3, [&](int j) { return j == 5 ? INFINITY : j == 40 ? -INFINITY : N(rng); });
    gen("Inf and NaN", 3, [&](int j) { return j == 5 ? INFINITY : j == 40 ? NAN : N(rng); });
    gen("all +Inf", 1, [](int) { return INFINITY; });
    gen("all NaN", 1, [](int) { return NAN; });
    gen("FLT_MAX", 2, [&](int j) { return j % 3 ? FLT_MAX : -FLT_MAX; });
    gen("FLT_MAX one", 4, [&](int j) { return j == 9 ? FLT_MAX : N(rng); });
    // subnormals and tiny norms
    gen("all subnormal", 40, [&](int) { return subnormal(rng); });
    gen("min subnormal", 2, [&](int j) { return j % 2 ? 1.4e-45f : -1.4e-45f; });
    gen("subnormal + one normal", 20, [&](int j) { return j == 11 ? 1.5e-38f : subnormal(rng); });
    gen("gauss x1e-39 (mixed)", 40, [&](int) { return 1e-39f * N(rng); });
    gen("subnormal + one large", 10, [&](int j) { return j == 30 ? 1.0f : subnormal(rng); });
    gen("one subnormal", 6, [&](int j) { return j == 7 ? subnormal(rng) : 0.0f; });
    // cost ties: constant, periodic, mirrored, one-hot rows
    for (float k : { 1.0f, -1.0f, 0.5f, 7.0f, 1e-30f, 2.5e30f }) gen("constant " + std::to_string(k), 1, [&](int) { return k; });
    gen("alternating", 1, [](int j) { return j % 2 ? -1.0f : 1.0f; });
    gen("ramp", 1, [](int j) { return (float) j; });
    gen("centred ramp", 1, [](int j) { return j - 31.5f; });
    for (int pos = 0; pos < QK; pos++) gen("one-hot " + std::to_string(pos), 1, [&](int j) { return j == pos ? 1.0f : 0.0f; });
    gen("two-hot", 8, [&](int j) { return j == 3 || j == 35 ? 2.0f : 0.0f; });
    for (int per : { 2, 4, 8, 16, 32 }) {
        for (int i = 0; i < 6; i++) {
            std::vector<float> p(per);
            for (float & v : p) v = N(rng);
            gen("period " + std::to_string(per), 1, [&](int j) { return p[j % per]; });
        }
    }
    for (int i = 0; i < 10; i++) {
        std::vector<float> h(32);
        for (float & v : h) v = N(rng);
        gen("mirror", 1, [&](int j) { return h[j % 32]; });
        gen("anti-mirror", 1, [&](int j) { return j < 32 ? h[j] : -h[j - 32]; });
    }
    gen("few levels", 40, [&](int) { return (float) ((int) (rng() % 5) - 2); });
    // values on the trellis' own paths (a random closed stream, its windows' codebook values), exact and noisy
    for (int i = 0; i < 60; i++) {
        const int n = 8 * c.s;  // stream bytes; the window of element j: 8 bits from bit sj, wrapping
        std::vector<uint8_t> qs(n);
        for (auto & q : qs) q = (uint8_t) rng();
        const float noise = i < 30 ? 0.0f : 0.01f;
        gen(noise == 0.0f ? "codebook path" : "codebook path + noise", 1, [&](int j) {
            const int b = c.s * j / 8;
            const unsigned w = ((unsigned) qs[b] | (unsigned) qs[(b + 1) % n] << 8) >> (c.s * j % 8);
            return c.cb[w & 255] + noise * N(rng);
        });
    }
    // real-looking: heavy tails, outlier channels, offsets, fp16-rounded values
    std::student_t_distribution<float> T3(3.0f);
    std::exponential_distribution<float> E(1.0f);
    gen("student t3", 150, [&](int) { return T3(rng); });
    gen("laplace", 150, [&](int) { return (rng() & 1 ? 1.0f : -1.0f) * E(rng); });
    gen("outlier channels", 150, [&](int j) { return (j == 7 || j == 45 ? 25.0f : 1.0f) * N(rng); });
    gen("offset 3", 100, [&](int) { return 3.0f + N(rng); });
    gen("fp16-rounded", 150, [&](int) { return to_f16_and_back(2.0f * N(rng)); });
    gen("uniform", 100, [&](int) { return U(rng); });
    if (B.n() % 2) gen("gauss (pad)", 1, [&](int) { return N(rng); });
    return B;
}

// ---- helpers -----------------------------------------------------------------------------------------------------

static bool same_f32(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub;
}
static bool same_f16(uint16_t a, uint16_t b) {
    const bool na = (a & 0x7c00) == 0x7c00 && (a & 0x3ff), nb = (b & 0x7c00) == 0x7c00 && (b & 0x3ff);
    return na || nb ? na && nb : a == b;
}
static bool same_bf16(uint16_t a, uint16_t b) {
    const bool na = (a & 0x7f80) == 0x7f80 && (a & 0x7f), nb = (b & 0x7f80) == 0x7f80 && (b & 0x7f);
    return na || nb ? na && nb : a == b;
}

static std::string hex(const uint8_t * p, int n) {
    std::string s;
    char buf[4];
    for (int i = 0; i < n; i++) { snprintf(buf, sizeof buf, "%02x", p[i]); s += buf; }
    return s;
}

struct graph_ctx {
    ggml_context *        ctx = nullptr;
    ggml_backend_buffer_t buf = nullptr;
    explicit graph_ctx(int ntensors) {
        ggml_init_params p = { ggml_tensor_overhead() * ntensors + ggml_graph_overhead(), nullptr, true };
        ctx = ggml_init(p);
    }
    ~graph_ctx() {
        if (buf) ggml_backend_buffer_free(buf);
        ggml_free(ctx);
    }
};

static bool run(ggml_backend_t be, graph_ctx & g, ggml_tensor * out, const std::string & what) {
    ggml_cgraph * gf = ggml_new_graph(g.ctx);
    ggml_build_forward_expand(gf, out);
    for (int i = 0; i < ggml_graph_n_nodes(gf); i++) {
        if (!ggml_backend_supports_op(be, ggml_graph_node(gf, i))) {
            report(what, 1, 1, "the CUDA backend does not support the op");
            return false;
        }
    }
    return ggml_backend_graph_compute(be, gf) == GGML_STATUS_SUCCESS;
}

// ---- checks ------------------------------------------------------------------------------------------------------

// CPU bytes of rows of `ne0` floats
static std::vector<uint8_t> cpu_quantize(const code & c, const float * x, int64_t nrows, int64_t ne0) {
    std::vector<uint8_t> q(nrows * ne0 / QK * c.bytes());
    ggml_quantize_chunk(c.type, x, q.data(), 0, nrows, ne0, nullptr);
    return q;
}

static std::vector<float> cpu_decode(const code & c, const uint8_t * q, int64_t n) {
    std::vector<float> y(n);
    ggml_get_type_traits(c.type)->to_float(q, y.data(), n);
    return y;
}

static void compare_blocks(const std::string & what, const blocks & B, const uint8_t * gpu, const uint8_t * cpu,
                           const std::vector<int> & block_of, const int BB) {
    long bad = 0;
    std::string first;
    for (size_t i = 0; i < block_of.size(); i++) {
        if (memcmp(gpu + i * BB, cpu + i * BB, BB) != 0) {
            if (!bad) first = "block " + std::to_string(block_of[i]) + " (" + B.label[block_of[i]] + "): cuda " +
                              hex(gpu + i * BB, BB) + " cpu " + hex(cpu + i * BB, BB);
            bad++;
        }
    }
    report(what, bad, (long) block_of.size(), first);
    if (bad) {  // which kinds of block differ
        std::vector<std::string> seen;
        for (size_t i = 0; i < block_of.size(); i++) {
            if (memcmp(gpu + i * BB, cpu + i * BB, BB) == 0) continue;
            const std::string & l = B.label[block_of[i]];
            bool have = false;
            for (auto & s : seen) have |= s == l;
            if (!have && seen.size() < 12) seen.push_back(l);
        }
        printf("      differing kinds:");
        for (auto & s : seen) printf(" [%s]", s.c_str());
        printf("\n");
    }
}

template <typename T, typename Same>
static void compare_values(const std::string & what, const T * gpu, const T * cpu, int64_t n, Same same) {
    long bad = 0;
    std::string first;
    for (int64_t i = 0; i < n; i++) {
        if (!same(gpu[i], cpu[i])) {
            if (!bad) {
                char buf[160];
                snprintf(buf, sizeof buf, "element %lld: cuda %.9g cpu %.9g (bits %llx %llx)", (long long) i,
                         (double) (float) gpu[i], (double) (float) cpu[i], (unsigned long long) gpu[i], (unsigned long long) cpu[i]);
                first = buf;
            }
            bad++;
        }
    }
    report(what, bad, n, first);
}
static void compare_f32(const std::string & what, const float * gpu, const float * cpu, int64_t n) {
    long bad = 0;
    std::string first;
    for (int64_t i = 0; i < n; i++) {
        if (!same_f32(gpu[i], cpu[i])) {
            if (!bad) {
                char buf[160];
                snprintf(buf, sizeof buf, "element %lld (block %lld): cuda %.9g cpu %.9g", (long long) i,
                         (long long) (i / QK), gpu[i], cpu[i]);
                first = buf;
            }
            bad++;
        }
    }
    report(what, bad, n, first);
}

// Every check of one code.
static void check(ggml_backend_t be, const code & c, int argc, char ** argv) {
    const int BB = c.bytes();
    const blocks B = make_blocks(c);
    const int64_t ne0 = 2 * QK;          // two blocks per row
    const int64_t R   = B.n() / 2;       // rows
    printf("%s: %d blocks (%lld rows of %lld)\n", c.name, B.n(), (long long) R, (long long) ne0);
    const std::vector<uint8_t> ref = cpu_quantize(c, B.x.data(), R, ne0);

    // 1. SET_ROWS F32 -> the code, rows scattered into a larger destination; rows not written keep their bytes
    {
        const int64_t R2 = R + 37;
        std::vector<int64_t> perm(R2);
        for (int64_t i = 0; i < R2; i++) perm[i] = i;
        std::mt19937_64 rng(7);
        std::shuffle(perm.begin(), perm.end(), rng);
        std::vector<int64_t> idx(perm.begin(), perm.begin() + R);
        for (int it = 0; it < 2; it++) {  // I64 and I32 row indices
            graph_ctx g(8);
            ggml_tensor * src = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, ne0, R);
            ggml_tensor * dst = ggml_new_tensor_2d(g.ctx, c.type, ne0, R2);
            ggml_tensor * ix  = ggml_new_tensor_1d(g.ctx, it == 0 ? GGML_TYPE_I64 : GGML_TYPE_I32, R);
            ggml_tensor * out = ggml_set_rows(g.ctx, dst, src, ix);
            g.buf = ggml_backend_alloc_ctx_tensors(g.ctx, be);
            ggml_backend_tensor_set(src, B.x.data(), 0, ggml_nbytes(src));
            ggml_backend_tensor_memset(dst, 0xab, 0, ggml_nbytes(dst));
            if (it == 0) {
                ggml_backend_tensor_set(ix, idx.data(), 0, ggml_nbytes(ix));
            } else {
                std::vector<int32_t> i32(idx.begin(), idx.end());
                ggml_backend_tensor_set(ix, i32.data(), 0, ggml_nbytes(ix));
            }
            const std::string what = std::string("SET_ROWS F32 -> ") + c.name + " bytes (" + (it ? "I32" : "I64") + " rows)";
            if (!run(be, g, out, what)) continue;
            std::vector<uint8_t> got(ggml_nbytes(dst));
            ggml_backend_tensor_get(dst, got.data(), 0, got.size());
            const size_t rb = ne0 / QK * BB;
            std::vector<uint8_t> gpu(R * rb);
            std::vector<int> block_of;
            for (int64_t r = 0; r < R; r++) {
                memcpy(gpu.data() + r * rb, got.data() + idx[r] * rb, rb);
                block_of.push_back((int) (2 * r));
                block_of.push_back((int) (2 * r + 1));
            }
            compare_blocks(what, B, gpu.data(), ref.data(), block_of, BB);
            long touched = 0;
            for (int64_t r = R; r < R2; r++) {
                for (size_t k = 0; k < rb; k++) touched += got[perm[r] * rb + k] != 0xab;
            }
            report(what + ", rows not written", touched, (long) ((R2 - R) * rb), "a byte of a row not in the index changed");
        }
    }

    // 2. CPY F32 -> the code (K-shift's requantization), from a strided view: rows of 128 out of rows of 192
    {
        const std::string what = std::string("CPY F32 -> ") + c.name + " bytes (strided rows)";
        graph_ctx g(8);
        ggml_tensor * big = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, ne0 + QK, R);
        ggml_tensor * src = ggml_view_2d(g.ctx, big, ne0, R, big->nb[1], 0);
        ggml_tensor * dst = ggml_new_tensor_2d(g.ctx, c.type, ne0, R);
        ggml_tensor * out = ggml_cpy(g.ctx, src, dst);
        g.buf = ggml_backend_alloc_ctx_tensors(g.ctx, be);
        std::vector<float> xb((ne0 + QK) * R, 12345.0f);
        for (int64_t r = 0; r < R; r++) memcpy(xb.data() + r * (ne0 + QK), B.x.data() + r * ne0, ne0 * sizeof(float));
        ggml_backend_tensor_set(big, xb.data(), 0, ggml_nbytes(big));
        if (run(be, g, out, what)) {
            std::vector<uint8_t> got(ggml_nbytes(dst));
            ggml_backend_tensor_get(dst, got.data(), 0, got.size());
            std::vector<int> block_of(B.n());
            for (int i = 0; i < B.n(); i++) block_of[i] = i;
            compare_blocks(what, B, got.data(), ref.data(), block_of, BB);
        }
    }

    // the decoders read the CPU's bytes
    const std::vector<float> dec = cpu_decode(c, ref.data(), R * ne0);

    // 3. GET_ROWS the code -> F32 (rows picked out of order, some twice)
    {
        const std::string what = std::string("GET_ROWS ") + c.name + " -> F32";
        graph_ctx g(8);
        const int64_t n = R + R / 3;
        std::vector<int32_t> idx(n);
        for (int64_t i = 0; i < n; i++) idx[i] = (int32_t) ((i * 7919) % R);
        ggml_tensor * src = ggml_new_tensor_2d(g.ctx, c.type, ne0, R);
        ggml_tensor * ix  = ggml_new_tensor_1d(g.ctx, GGML_TYPE_I32, n);
        ggml_tensor * out = ggml_get_rows(g.ctx, src, ix);
        g.buf = ggml_backend_alloc_ctx_tensors(g.ctx, be);
        ggml_backend_tensor_set(src, ref.data(), 0, ggml_nbytes(src));
        ggml_backend_tensor_set(ix, idx.data(), 0, ggml_nbytes(ix));
        if (run(be, g, out, what)) {
            std::vector<float> got(n * ne0), want(n * ne0);
            ggml_backend_tensor_get(out, got.data(), 0, ggml_nbytes(out));
            for (int64_t i = 0; i < n; i++) memcpy(want.data() + i * ne0, dec.data() + idx[i] * ne0, ne0 * sizeof(float));
            compare_f32(what, got.data(), want.data(), n * ne0);
        }
    }

    // 4. CPY the code -> F32
    {
        const std::string what = std::string("CPY ") + c.name + " -> F32";
        graph_ctx g(8);
        ggml_tensor * src = ggml_new_tensor_2d(g.ctx, c.type, ne0, R);
        ggml_tensor * dst = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, ne0, R);
        ggml_tensor * out = ggml_cpy(g.ctx, src, dst);
        g.buf = ggml_backend_alloc_ctx_tensors(g.ctx, be);
        ggml_backend_tensor_set(src, ref.data(), 0, ggml_nbytes(src));
        if (run(be, g, out, what)) {
            std::vector<float> got(R * ne0);
            ggml_backend_tensor_get(dst, got.data(), 0, ggml_nbytes(dst));
            compare_f32(what, got.data(), dec.data(), R * ne0);
        }
    }

    // 5. convert.cu's converters (what the prefill kernels and the tier's concatenation read), called directly
#ifndef OSCAR_CHECK_ON_CPU
    {
        // linked in, so its symbols are global; else load the library named on the command line
        const char * lib = argc > 1 ? argv[1] : "libggml-cuda.so";
        // (RTLD_DEFAULT is a null handle in glibc: test the lookup, not the handle)
        const bool linked = dlsym(RTLD_DEFAULT, "_Z21ggml_get_to_fp32_cuda9ggml_type") != nullptr;
        void * h = linked ? RTLD_DEFAULT : dlopen(lib, RTLD_NOW);
        typedef void * (*get_t)(ggml_type);
        typedef void (*cont_t)(const void *, void *, int64_t, cudaStream_t);
        typedef void (*nc_t)(const void *, void *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
        const char * cont_names[3] = { "_Z21ggml_get_to_fp32_cuda9ggml_type", "_Z21ggml_get_to_fp16_cuda9ggml_type", "_Z21ggml_get_to_bf16_cuda9ggml_type" };
        const char * nc_names[3]   = { "_Z24ggml_get_to_fp32_nc_cuda9ggml_type", "_Z24ggml_get_to_fp16_nc_cuda9ggml_type", "_Z24ggml_get_to_bf16_nc_cuda9ggml_type" };
        const char * kind[3]       = { "fp32", "fp16", "bf16" };
        if (!linked && !h) {
            const char * why = dlerror();
            report("converters: dlopen " + std::string(lib), 1, 1, why ? why : "unknown error");
        } else {
            // a source of rows of 3 blocks: the contiguous converters decode it all, the nc ones the first two blocks
            // of each row as a [128, R/4, 2, 2] view with strides of 3 blocks per row
            const int64_t ne3 = 3 * QK, R4 = R / 4 * 4;
            std::vector<float> x3(ne3 * R4);
            for (int64_t r = 0; r < R4; r++) {
                for (int64_t k = 0; k < ne3; k++) x3[r * ne3 + k] = B.x[(r * ne3 + k) % B.x.size()];
            }
            const std::vector<uint8_t> q3 = cpu_quantize(c, x3.data(), R4, ne3);
            const std::vector<float>   d3 = cpu_decode(c, q3.data(), R4 * ne3);
            void * dq = nullptr, * dy = nullptr;
            cudaMalloc(&dq, q3.size());
            cudaMalloc(&dy, d3.size() * sizeof(float));
            cudaMemcpy(dq, q3.data(), q3.size(), cudaMemcpyHostToDevice);
            for (int t = 0; t < 3; t++) {
                for (int nc = 0; nc < 2; nc++) {
                    const std::string what = std::string("convert ") + c.name + " -> " + kind[t] + (nc ? " (nc, strided)" : " (contiguous)");
                    get_t get = (get_t) dlsym(h, nc ? nc_names[t] : cont_names[t]);
                    void * fn = get ? get(c.type) : nullptr;
                    if (!fn) {
                        report(what, 1, 1, get ? "no converter for the type" : "symbol not found");
                        continue;
                    }
                    std::vector<float> want;
                    if (nc) {
                        for (int64_t r = 0; r < R4; r++) want.insert(want.end(), d3.begin() + r * ne3, d3.begin() + r * ne3 + ne0);
                        ((nc_t) fn)(dq, dy, ne0, R4 / 4, 2, 2, 3, 3 * (R4 / 4), 3 * (R4 / 2), 0);
                    } else {
                        want = d3;
                        ((cont_t) fn)(dq, dy, (int64_t) d3.size(), 0);
                    }
                    cudaError_t err = cudaDeviceSynchronize();
                    if (err != cudaSuccess) {
                        report(what, 1, 1, cudaGetErrorString(err));
                        continue;
                    }
                    const int64_t n = (int64_t) want.size();
                    if (t == 0) {
                        std::vector<float> got(n);
                        cudaMemcpy(got.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost);
                        compare_f32(what, got.data(), want.data(), n);
                    } else {
                        std::vector<uint16_t> got(n), w16(n);
                        cudaMemcpy(got.data(), dy, n * sizeof(uint16_t), cudaMemcpyDeviceToHost);
                        for (int64_t i = 0; i < n; i++) {
                            if (t == 1) { ggml_fp16_t v = ggml_fp32_to_fp16(want[i]); memcpy(&w16[i], &v, 2); }
                            else        { ggml_bf16_t v = ggml_fp32_to_bf16(want[i]); memcpy(&w16[i], &v, 2); }
                        }
                        if (t == 1) compare_values(what, got.data(), w16.data(), n, same_f16);
                        else        compare_values(what, got.data(), w16.data(), n, same_bf16);
                    }
                }
            }
            cudaFree(dq);
            cudaFree(dy);
        }
    }
#else
    GGML_UNUSED(argc);
    GGML_UNUSED(argv);
#endif
}

int main(int argc, char ** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);  // every line reaches the log, also when something aborts later
#ifdef OSCAR_CHECK_ON_CPU
    ggml_backend_t be = ggml_backend_cpu_init();
#else
    ggml_backend_t be = ggml_backend_cuda_init(0);
#endif
    if (!be) {
        fprintf(stderr, "no CUDA device\n");
        return 2;
    }
    for (const code & c : CODES) check(be, c, argc, argv);

    ggml_backend_free(be);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
