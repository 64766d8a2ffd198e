// The bitshift-trellis block codes of oscar2 (2 bits per element) and oscar3 (3 bits) (issue 15; NumPy model:
// tests/tcq_ref.py, numbers: docs/tcq-mse.md, docs/tcq-mse-3bit.md), as block math shared by the CPU (oscar_tcq.c)
// and CUDA (oscar.cuh): one definition of the encoder and of the decode of an element. Functions take s, the bits
// per element (2 or 3); with a constant s the compiler folds it.
//
// A block of 64 floats is 2 + 8s bytes (oscar2's 18, oscar3's 26): bytes 0-1 the fp16 scale (little-endian), then
// one circular stream of 64s bits, stream bit b in code byte b / 8 at bit b % 8. Element j decodes to
// codebook[w_j] x scale, w_j the OSCAR_TCQ_L-bit window of the stream that starts at bit sj and wraps past the last
// bit to bit 0 (stream bit sj + t is bit t of w_j). Consecutive windows share L - s bits, so the windows are a path
// in a trellis of 2^L states: w_j+1 = (w_j >> s) | c << (L - s), c the s new bits, and the path closes the circle
// (w_63 >> s == w_0 & (2^(L-s) - 1)). Each width has its own codebook (oscar_tcq_codebook.h).
//
// Encoding follows the scalar quantizer (oscar_quantize_block) for the scale: the block's norm in double,
// u = x * 8 / norm, the stream chosen for u, then scale = oscar_scale_bits(norm, sum of codebook[w_j]^2) (the norm
// kept); NaN anywhere -> NaN scale and zero codes, +-Inf counts as +-FLT_MAX, all zero -> zero scale and codes.
// The stream is tcq_ref.encode's two-pass circular Viterbi (exact=False): a free pass on u turned by half a block
// picks the overlap the seam wants (the low L - s bits of w_0), a second pass is constrained to it.
//
// Determinism: path costs are integers (below, oscar_tcq_branch), so every build, SIMD or scalar, contracted (FMA)
// or not, CPU or GPU, picks the same stream. Ties go to the lowest predecessor, then to the lowest end state.
#ifndef OSCAR_TCQ_BLOCK_H
#define OSCAR_TCQ_BLOCK_H

#include "oscar_block.h"

#define OSCAR_TCQ_L 8
#define OSCAR_TCQ_STATES (1 << OSCAR_TCQ_L)
// The predecessors of state w are ((w & (LINKS - 1)) << s) | c, c < 2^s, LINKS = 2^(L - s): the 2^s states w,
// w + LINKS, ... share them. LINKS is also the number of overlap values at the seam.
#define OSCAR_TCQ_LINKS(s) (OSCAR_TCQ_STATES >> (s))
#define OSCAR_TCQ_LINKS_MAX OSCAR_TCQ_LINKS(2)

OSCAR_HD int oscar_tcq_code_bytes(int s) { return 8 * s; }

// w_j of a block's 8s code bytes (a window of up to 9 bits starts in one byte and ends in the next).
OSCAR_HD int oscar_tcq_window(int s, const uint8_t * qs, int j) {
    const int      bit = s * j, b = bit >> 3, n = oscar_tcq_code_bytes(s);
    const unsigned w   = (unsigned) qs[b] | (unsigned) qs[b + 1 == n ? 0 : b + 1] << 8;
    return (int) (w >> (bit & 7)) & (OSCAR_TCQ_STATES - 1);
}

// 64 stream bits of a block's 8s code bytes from byte 2sg on (wrapping), bit 16sg first: windows 16g .. 16g + 15
// are (oscar_tcq_bits(s, qs, g) >> sk) & (STATES - 1), k = 0..15 (15s + L <= 64 bits).
OSCAR_HD uint64_t oscar_tcq_bits(int s, const uint8_t * qs, int g) {
    const int n = oscar_tcq_code_bytes(s), b = 2 * s * g;
    uint64_t  v, w;
    if (b + 8 <= n) {  // no wrap (g < 3): one load (little-endian hosts, as GGUF itself)
        memcpy(&v, qs + b, sizeof v);
        return v;
    }
    // g = 3 wraps: bytes b .. n - 1 from the last 8, then bytes 0 .. on top (two loads, no byte loop: the loop
    // doubled an oscar3 block's decode)
    memcpy(&v, qs + n - 8, sizeof v);
    memcpy(&w, qs, sizeof w);
    return v >> (8 * (b - n + 8)) | w << (8 * (n - b));
}

// Element j of a block: codebook[w_j] x scale.
OSCAR_HD float oscar_tcq_value(int s, const float * cb, float scale, const uint8_t * qs, int j) {
    return scale * cb[oscar_tcq_window(s, qs, j)];
}

// Costs are exact integers in units of 2^-OSCAR_TCQ_UNIT_BITS: v and the codebook values are rounded to multiples of
// 2^-9 (oscar_tcq_scaled: integers vi, ci) and coding v with c costs (vi - ci)^2, an integer multiply (a GPU's
// IMAD, AVX2's madd of 16-bit halves: no float-to-int conversion on the Viterbi's critical path). Rounding moves a
// value by at most 2^-10, far below the code's error (tests/test_tcq_c.py: the same streams as the float64 model
// but for a few ties). Bounds, with |u| <= 8 and |codebook| < 4 (tests/test_tcq_c.py checks the tables):
// |vi - ci| <= 6144, a branch costs at most 6144^2 (2^25.2 units). A survivor's k (L - s bits) is renewed s bits a
// step, so any k is 3 free steps away (s = 2; 2 for s = 3): a survivor is below 2464 (2^29.3 units), the cost of a
// path that takes 3 free steps to a self-loop state (a window that repeats every s bits, as 0x00 or 0xff), stays
// there and takes 3 free steps to its end (at most sum (|u_j| + 4)^2 <= 64 (1 + 4)^2 plus 6 x 144); a path from a
// forbidden start costs at least OSCAR_TCQ_FAR = 2^30 units and is kept only for the 3 steps it takes to reach
// every k (below 2^30 + 3 x 2^25.2 < 2^31). So nothing overflows and a forbidden start never wins.
#define OSCAR_TCQ_UNIT_BITS 18
#define OSCAR_TCQ_FAR (1 << 30)

// v or a codebook value as an integer in the units whose square is a cost unit (round to nearest, ties to even).
OSCAR_HD int32_t oscar_tcq_scaled(double v) { return (int32_t) rint(v * (double) (1 << (OSCAR_TCQ_UNIT_BITS / 2))); }

OSCAR_HD int32_t oscar_tcq_branch(int32_t v, int32_t c) { return (v - c) * (v - c); }

// The high L - s bits of a pass's last state: overlap when constrained, else the lowest k of least best[k].
OSCAR_HD int oscar_tcq_last(int s, const int32_t * best, int overlap) {
    if (overlap >= 0) return overlap;
    int k = 0;
    for (int i = 1; i < OSCAR_TCQ_LINKS(s); i++) k = best[i] < best[k] ? i : k;
    return k;
}

// One Viterbi pass over v_j = u[(j + rot) % 64], j = 0..63: the path of states with the least cost, written to
// path[64]. overlap >= 0 constrains the path to close the circle through it: (path[0] & (LINKS - 1)) and
// (path[63] >> s) both equal overlap. cbs is the codebook scaled (oscar_tcq_scaled) in predecessor order:
// cbs[c LINKS + k] = codebook[2^s k + c]. best[k] is the least cost of a path to v_j ending in a state whose high
// L - s bits are k (0 before the first), so step j takes best[k] = min over c of old best[(2^s k + c) % LINKS] +
// branch(v_j, codebook[2^s k + c]) and back[j][k] the winning c, the lowest on ties; at the end the lowest k of
// least cost wins (the lowest end state). The old costs output k reads depend on k % Q only (Q = LINKS / 2^s), so
// they are gathered once a step into g[c][m] and the loop over m runs over contiguous arrays (a compiler vectorizes
// it when s is a constant: OSCAR_HD_FLAT inlines the pass into callers that pass one). Scratch (5 KB) on the stack.
OSCAR_HD_FLAT void oscar_tcq_viterbi(int s, const int32_t * cbs, const double * u, int rot, int overlap, uint8_t * path) {
    const int links = OSCAR_TCQ_LINKS(s), np = 1 << s, q = links >> s;
    int32_t   best[OSCAR_TCQ_LINKS_MAX], g[8][OSCAR_TCQ_LINKS_MAX / 4];
    uint8_t   back[OSCAR_QK][OSCAR_TCQ_LINKS_MAX];
    for (int k = 0; k < links; k++) best[k] = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    for (int j = 0; j < OSCAR_QK; j++) {
        const int32_t v = oscar_tcq_scaled(u[(j + rot) & (OSCAR_QK - 1)]);
        for (int c = 0; c < np; c++) {
            for (int m = 0; m < q; m++) g[c][m] = best[np * m + c];
        }
        for (int h = 0; h < links; h += q) {
            for (int m = 0; m < q; m++) {
                int32_t mn = g[0][m] + oscar_tcq_branch(v, cbs[h + m]);
                uint8_t w  = 0;
                for (int c = 1; c < np; c++) {
                    const int32_t a = g[c][m] + oscar_tcq_branch(v, cbs[c * links + h + m]);
                    w  = a < mn ? (uint8_t) c : w;
                    mn = a < mn ? a : mn;
                }
                best[h + m]    = mn;
                back[j][h + m] = w;
            }
        }
    }
    int k = oscar_tcq_last(s, best, overlap);
    for (int j = OSCAR_QK - 1; j >= 0; j--) {
        path[j] = (uint8_t) (k << s | back[j][k]);
        k = path[j] & (links - 1);
    }
}

// The scaled codebook in predecessor order, as oscar_tcq_viterbi takes it.
OSCAR_HD void oscar_tcq_scaled_codebook(int s, const float * cb, int32_t * cbs) {
    for (int w = 0; w < OSCAR_TCQ_STATES; w++) {
        cbs[(w & ((1 << s) - 1)) * OSCAR_TCQ_LINKS(s) + (w >> s)] = oscar_tcq_scaled(cb[w]);
    }
}

// The overlap the first pass (on u turned by half a block) asks the second to close the circle through.
OSCAR_HD int oscar_tcq_seam(int s, const uint8_t * turned) { return turned[OSCAR_QK / 2] & (OSCAR_TCQ_LINKS(s) - 1); }

// The windows w[64] of the circular stream for u (two passes, as tcq_ref.encode with exact=False); cbs as
// oscar_tcq_viterbi takes it.
OSCAR_HD_FLAT void oscar_tcq_encode(int s, const int32_t * cbs, const double * u, uint8_t * w) {
    uint8_t turned[OSCAR_QK];
    oscar_tcq_viterbi(s, cbs, u, OSCAR_QK / 2, -1, turned);
    oscar_tcq_viterbi(s, cbs, u, 0, oscar_tcq_seam(s, turned), w);
}

// The first half of quantizing a block x: u = x 8 / ||x|| and *norm = ||x||, returning 1; or, for a block with a NaN
// or all zero, 0 with the block's whole 2 + 8s bytes written (NaN or zero scale, zero codes).
OSCAR_HD int oscar_tcq_prepare(int s, const float * x, double * u, double * norm, uint8_t * out) {
    int          nan = 0;
    const double ss  = oscar_block_sumsq(x, &nan);
    if (nan || !(ss > 0.0)) {
        const uint16_t d = nan ? OSCAR_FP16_NAN : 0;
        for (int i = 0; i < 2 + oscar_tcq_code_bytes(s); i++) out[i] = 0;
        out[0] = (uint8_t) (d & 0xff);
        out[1] = (uint8_t) (d >> 8);
        return 0;
    }
    *norm = sqrt(ss);
    const double inv = 8.0 / *norm;  // sqrt(64) / ||x||
    for (int i = 0; i < OSCAR_QK; i++) u[i] = (double) oscar_clamp_inf(x[i]) * inv;
    return 1;
}

// The second half: the block's bytes for windows w[64] (a closed path) of a block of that norm.
OSCAR_HD void oscar_tcq_pack(int s, const float * cb, double norm, const uint8_t * w, uint8_t * out) {
    double lv2 = 0.0;
    for (int i = 2; i < 2 + oscar_tcq_code_bytes(s); i++) out[i] = 0;
    for (int j = 0; j < OSCAR_QK; j++) {
        lv2 += (double) cb[w[j]] * (double) cb[w[j]];
        for (int t = 0; t < s; t++) {  // stream bit sj + t = bit t of w_j
            const int bit = s * j + t;
            out[2 + (bit >> 3)] |= (uint8_t) (((w[j] >> t) & 1) << (bit & 7));
        }
    }
    const uint16_t d = oscar_scale_bits(norm, lv2);
    out[0] = (uint8_t) (d & 0xff);
    out[1] = (uint8_t) (d >> 8);
}

// Quantize 64 floats into one block (format and conventions above); cbs: oscar_tcq_scaled_codebook(s, cb). Inlined
// with the encoder, so a caller that passes a constant s gets the Viterbi shaped for it.
OSCAR_HD_FLAT void oscar_tcq_quantize_block(int s, const float * cb, const int32_t * cbs, const float * x, uint8_t * out) {
    double  u[OSCAR_QK], norm = 0.0;
    uint8_t w[OSCAR_QK];
    if (!oscar_tcq_prepare(s, x, u, &norm, out)) return;
    oscar_tcq_encode(s, cbs, u, w);
    oscar_tcq_pack(s, cb, norm, w, out);
}

#endif // OSCAR_TCQ_BLOCK_H
