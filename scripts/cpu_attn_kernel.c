// The CPU attention kernel alone (native/oscar_attn.c), one decode step of one layer at SmolLM2's shape: 3 KV heads of
// 64 elements, 3 query heads each, ROWS cached rows of TYPE (2: oscar2, 3: oscar3); one query row (decode: each
// head's rows cut into pieces of OSCAR_ATTN_CHUNK as ggml-cpu cuts them) or QROWS of them (a prefill batch that sees
// every row, oscar_attn_rows); one thread, best of REPS. Prints one JSON line.
// scripts/cpu_attn_kernel.py compiles it against the native/ of two trees and runs them side by side.
//
//     cc -O3 -march=native -Inative scripts/cpu_attn_kernel.c native/oscar.c native/oscar_attn.c native/oscar_tcq.c \
//        native/oscar_dot.c -lm [-DTILE_DECODE] && ./a.out TYPE ROWS REPS [QROWS]
// TILE_DECODE: the tree's oscar_attn_src has k_bits / v_bits (the tile decode); without it the rows go through
// k_to_float one by one, as before it.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "oscar.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + 1e-9 * (double) t.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float gauss(void) {  // Box-Muller on a 64-bit LCG: the same rows on every machine
    double u[2];
    for (int i = 0; i < 2; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        u[i] = ((double) (rng >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float) (sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

int main(int argc, char ** argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s TYPE(2|3) ROWS REPS [QROWS]\n", argv[0]);
        return 2;
    }
    const int     bits = atoi(argv[1]), reps = atoi(argv[3]), nq = argc == 5 ? atoi(argv[4]) : 1;
    const int64_t n = atoll(argv[2]), D = 64, HKV = 3, G = 3, nb = (int64_t) oscar_block_bytes(bits);
    const oscar_to_float_fn to_float = bits == 2 ? oscar2_dequantize_row : oscar3_dequantize_row;
    char *    k = malloc((size_t) (HKV * n * nb)), * v = malloc((size_t) (HKV * n * nb));
    float     x[64], q[OSCAR_ATTN_QROWS * 3 * 64], out[OSCAR_ATTN_QROWS * 3 * 64];
    float *   work = malloc(oscar_attn_rows_work(D, D, nq, (int) G, n) * sizeof(float));
    int32_t * rows = malloc((size_t) n * sizeof(int32_t));
    float *   part = malloc((size_t) (G * (2 + D) * oscar_attn_chunks(n)) * sizeof(float));
    float *   scratch = malloc(oscar_attn_scratch(D, D, 1, (int) G) * sizeof(float));
    for (int64_t r = 0; r < HKV * n; r++) {
        for (int d = 0; d < D; d++) x[d] = gauss();
        oscar_quantize_row(bits, x, k + r * nb, D);
        for (int d = 0; d < D; d++) x[d] = gauss();
        oscar_quantize_row(bits, x, v + r * nb, D);
    }
    for (int i = 0; i < OSCAR_ATTN_QROWS * G * D; i++) q[i] = gauss();
    for (int64_t r = 0; r < n; r++) rows[r] = (int32_t) r;
    double best = INFINITY, check = 0.0;
    for (int rep = 0; rep < reps; rep++) {
        const double t = now();
        for (int64_t h = 0; h < HKV; h++) {
            oscar_attn_src s = { 0 };
            s.k = k + h * n * nb;
            s.v = v + h * n * nb;
            s.n = n;
            s.nbk = s.nbv = (size_t) nb;
            s.k_to_float = s.v_to_float = to_float;
#ifdef TILE_DECODE
            s.k_bits = s.v_bits = bits;
#endif
            oscar_attn_query qa = { 0 };
            qa.q = q;
            qa.q_head = qa.dk = qa.dv = D;
            qa.scale = 0.125f;
            qa.h0 = G * h;
            qa.n_head = G * HKV;
            qa.g = (int) G;
            if (nq > 1) {  // a batch of query rows that all see every row: oscar_attn_rows, as prefill runs it
                qa.q_row = G * D;
                oscar_attn_rows(&s, 1, &qa, nq, NULL, out, G * D, D, work);
                continue;
            }
            for (int64_t c = 0; c < oscar_attn_chunks(n); c++) {
                const int64_t lo = c * OSCAR_ATTN_CHUNK, len = n - lo < OSCAR_ATTN_CHUNK ? n - lo : OSCAR_ATTN_CHUNK;
                oscar_attn_part(&s, 1, rows + lo, len, &qa, 1, part + c * G * (2 + D), scratch);
            }
        }
        const double dt = now() - t;
        best = dt < best ? dt : best;
    }
    for (int i = 0; i < (nq > 1 ? nq * G * D : 2 + D); i++) check += nq > 1 ? out[i] : part[i];  // equal across builds
    printf("{\"type\": \"oscar%d\", \"rows\": %lld, \"qrows\": %d, \"ns_per_row\": %.3f, \"ms_per_layer\": %.4f, "
           "\"check\": %.6f}\n", bits, (long long) n, nq, best * 1e9 / (double) (HKV * n), best * 1e3, check);
    return 0;
}
