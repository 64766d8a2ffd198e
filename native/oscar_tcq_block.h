// The bitshift-trellis 2-bit block code (issue 15; NumPy model: tests/tcq_ref.py, numbers: docs/tcq-mse.md), as
// block math shared by the CPU (oscar_tcq.c) and, later, CUDA: one definition of the encoder and of the decode of
// an element.
//
// A block of 64 floats is 18 bytes, oscar2's size: bytes 0-1 the fp16 scale (little-endian), bytes 2-17 one
// circular stream of 128 bits, stream bit b in code byte b / 8 at bit b % 8. Element j decodes to
// codebook[w_j] x scale, w_j the OSCAR_TCQ_L-bit window of the stream that starts at bit 2j and wraps past bit 127
// to bit 0 (stream bit 2j + t is bit t of w_j). Consecutive windows share L - 2 bits, so the windows are a path in
// a trellis of 2^L states: w_j+1 = (w_j >> 2) | c << (L - 2), c the two new bits, and the path closes the circle
// (w_63 >> 2 == w_0 & (2^(L-2) - 1)).
//
// Encoding follows oscar2's scalar quantizer (oscar_quantize_block) for the scale: the block's norm in double,
// u = x * 8 / norm, the stream chosen for u, then scale = oscar_scale_bits(norm, sum of codebook[w_j]^2) (the norm
// kept); NaN anywhere -> NaN scale and zero codes, +-Inf counts as +-FLT_MAX, all zero -> zero scale and codes.
// The stream is tcq_ref.encode's two-pass circular Viterbi (exact=False): a free pass on u turned by half a block
// picks the overlap the seam wants (the low L - 2 bits of w_0), a second pass is constrained to it.
//
// Determinism: path costs are integers (below, oscar_tcq_branch), so every build, SIMD or scalar, contracted (FMA)
// or not, CPU or GPU, picks the same stream. Ties go to the lowest predecessor, then to the lowest end state.
#ifndef OSCAR_TCQ_BLOCK_H
#define OSCAR_TCQ_BLOCK_H

#include "oscar_block.h"

#define OSCAR_TCQ_L 8
#define OSCAR_TCQ_STATES (1 << OSCAR_TCQ_L)
// The predecessors of state s are ((s & (OSCAR_TCQ_LINKS - 1)) << 2) | c, c = 0..3: the 4 states s, s + LINKS,
// s + 2 LINKS and s + 3 LINKS share them. LINKS is also the number of overlap values at the seam.
#define OSCAR_TCQ_LINKS (OSCAR_TCQ_STATES >> 2)

// w_j of a block's 16 code bytes (windows of up to 10 bits start at an even bit, so two bytes hold them).
OSCAR_HD int oscar_tcq_window(const uint8_t * qs, int j) {
    const int      b = j >> 2;
    const unsigned w = (unsigned) qs[b] | (unsigned) qs[(b + 1) & 15] << 8;
    return (int) (w >> (2 * (j & 3))) & (OSCAR_TCQ_STATES - 1);
}

// Stream bits 32g .. 32g + 63 of a block's 16 code bytes (wrapping), bit 32g first: windows 16g .. 16g + 15 are
// (oscar_tcq_bits(qs, g) >> 2k) & (STATES - 1), k = 0..15.
OSCAR_HD uint32_t oscar_tcq_word(const uint8_t * qs, int i) {  // code bytes 4i .. 4i + 3, little-endian
    const uint8_t * p = qs + 4 * (i & 3);
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

OSCAR_HD uint64_t oscar_tcq_bits(const uint8_t * qs, int g) {
    return (uint64_t) oscar_tcq_word(qs, g) | (uint64_t) oscar_tcq_word(qs, g + 1) << 32;
}

// Element j of a block: codebook[w_j] x scale.
OSCAR_HD float oscar_tcq_value(const float * cb, float scale, const uint8_t * qs, int j) {
    return scale * cb[oscar_tcq_window(qs, j)];
}

// Costs are exact integers in units of 2^-OSCAR_TCQ_UNIT_BITS: v and the codebook values are rounded to multiples of
// 2^-9 (oscar_tcq_scaled: integers vi, ci) and coding v with c costs (vi - ci)^2, an integer multiply (a GPU's
// IMAD, AVX2's madd of 16-bit halves: no float-to-int conversion on the Viterbi's critical path). Rounding moves a
// value by at most 2^-10, far below the code's error (tests/test_tcq_c.py: the same streams as the float64 model
// but for a few ties). Bounds, with |u| <= 8 and |codebook| < 4 (tests/test_tcq_c.py checks the table):
// |vi - ci| <= 6144, a branch costs at most 6144^2 (2^25.2 units); a survivor below 2464 (2^29.3 units), the cost of a path that takes 3 free steps to a self-loop state (window 0x00, 0x55, 0xaa or
// 0xff), stays there and takes 3 free steps to its end (at most sum (|u_j| + 4)^2 <= 64 (1 + 4)^2 plus 6 x 144); a
// path from a forbidden start costs at least OSCAR_TCQ_FAR = 2^30 units and is kept only for the 3 steps it takes
// to reach every state (below 2^30 + 3 x 2^25.2 < 2^31). So nothing overflows and a forbidden start never wins.
#define OSCAR_TCQ_UNIT_BITS 18
#define OSCAR_TCQ_FAR (1 << 30)

// v or a codebook value as an integer in the units whose square is a cost unit (round to nearest, ties to even).
OSCAR_HD int32_t oscar_tcq_scaled(double v) { return (int32_t) rint(v * (double) (1 << (OSCAR_TCQ_UNIT_BITS / 2))); }

OSCAR_HD int32_t oscar_tcq_branch(int32_t v, int32_t c) { return (v - c) * (v - c); }

// The high L - 2 bits of a pass's last state: overlap when constrained, else the lowest k of least best[k].
OSCAR_HD int oscar_tcq_last(const int32_t * best, int overlap) {
    if (overlap >= 0) return overlap;
    int k = 0;
    for (int i = 1; i < OSCAR_TCQ_LINKS; i++) k = best[i] < best[k] ? i : k;
    return k;
}

// One Viterbi pass over v_j = u[(j + rot) % 64], j = 0..63: the path of states with the least cost, written to
// path[64]. overlap >= 0 constrains the path to close the circle through it: (path[0] & (LINKS - 1)) and
// (path[63] >> 2) both equal overlap. cbs is the codebook scaled (oscar_tcq_scaled) in predecessor order:
// cbs[c LINKS + k] = codebook[4k + c]. best[k] is the least cost of a path to v_j ending in a state whose high
// L - 2 bits are k (0 before the first), so step j takes best[k] = min over c of old best[(4k + c) % LINKS] +
// branch(v_j, codebook[4k + c]) and back[j][k] the winning c, the lowest on ties; at the end the lowest k of least
// cost wins (the lowest end state). Scratch (4.5 KB at L = 8) is on the stack.
OSCAR_HD void oscar_tcq_viterbi(const int32_t * cbs, const double * u, int rot, int overlap, uint8_t * path) {
    enum { Q = OSCAR_TCQ_LINKS / 4 };
    int32_t best[OSCAR_TCQ_LINKS], g[4][Q];
    uint8_t back[OSCAR_QK][OSCAR_TCQ_LINKS];
    for (int k = 0; k < OSCAR_TCQ_LINKS; k++) best[k] = overlap < 0 || k == overlap ? 0 : OSCAR_TCQ_FAR;
    for (int j = 0; j < OSCAR_QK; j++) {
        const int32_t v = oscar_tcq_scaled(u[(j + rot) & (OSCAR_QK - 1)]);
        for (int c = 0; c < 4; c++) {
            for (int m = 0; m < Q; m++) g[c][m] = best[4 * m + c];  // old best[(4k + c) % LINKS] = g[c][k % Q]
        }
        for (int h = 0; h < OSCAR_TCQ_LINKS; h += Q) {
            for (int m = 0; m < Q; m++) {
                const int32_t * cs = cbs + h + m;
                const int32_t a0 = g[0][m] + oscar_tcq_branch(v, cs[0]);
                const int32_t a1 = g[1][m] + oscar_tcq_branch(v, cs[OSCAR_TCQ_LINKS]);
                const int32_t a2 = g[2][m] + oscar_tcq_branch(v, cs[2 * OSCAR_TCQ_LINKS]);
                const int32_t a3 = g[3][m] + oscar_tcq_branch(v, cs[3 * OSCAR_TCQ_LINKS]);
                const int32_t m01 = a1 < a0 ? a1 : a0, m23 = a3 < a2 ? a3 : a2;
                const int32_t c1 = -(a1 < a0), c3 = -(a3 < a2), hi = -(m23 < m01);  // masks: branch-free
                best[h + m]    = m23 < m01 ? m23 : m01;
                back[j][h + m] = (uint8_t) ((hi & (2 - c3)) | (~hi & -c1));
            }
        }
    }
    int k = oscar_tcq_last(best, overlap);
    for (int j = OSCAR_QK - 1; j >= 0; j--) {
        path[j] = (uint8_t) (k << 2 | back[j][k]);
        k = path[j] & (OSCAR_TCQ_LINKS - 1);
    }
}

// The scaled codebook in predecessor order, as oscar_tcq_viterbi takes it.
OSCAR_HD void oscar_tcq_scaled_codebook(const float * cb, int32_t * cbs) {
    for (int s = 0; s < OSCAR_TCQ_STATES; s++) cbs[(s & 3) * OSCAR_TCQ_LINKS + (s >> 2)] = oscar_tcq_scaled(cb[s]);
}

// The windows w[64] of the circular stream for u (two passes, as tcq_ref.encode with exact=False); cbs as
// oscar_tcq_viterbi takes it.
OSCAR_HD void oscar_tcq_encode(const int32_t * cbs, const double * u, uint8_t * w) {
    uint8_t turned[OSCAR_QK];
    oscar_tcq_viterbi(cbs, u, OSCAR_QK / 2, -1, turned);
    oscar_tcq_viterbi(cbs, u, 0, turned[OSCAR_QK / 2] & (OSCAR_TCQ_LINKS - 1), w);
}

// The first half of quantizing a block x: u = x 8 / ||x|| and *norm = ||x||, returning 1; or, for a block with a NaN
// or all zero, 0 with the block's whole 18 bytes written (NaN or zero scale, zero codes).
OSCAR_HD int oscar_tcq_prepare(const float * x, double * u, double * norm, uint8_t * out) {
    int          nan = 0;
    const double ss  = oscar_block_sumsq(x, &nan);
    if (nan || !(ss > 0.0)) {
        const uint16_t d = nan ? OSCAR_FP16_NAN : 0;
        for (int i = 0; i < OSCAR2_BLOCK_BYTES; i++) out[i] = 0;
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
OSCAR_HD void oscar_tcq_pack(const float * cb, double norm, const uint8_t * w, uint8_t * out) {
    double lv2 = 0.0;
    for (int i = 2; i < OSCAR2_BLOCK_BYTES; i++) out[i] = 0;
    for (int j = 0; j < OSCAR_QK; j++) {
        lv2 += (double) cb[w[j]] * (double) cb[w[j]];
        out[2 + j / 4] |= (uint8_t) ((w[j] & 3) << (2 * (j & 3)));  // stream bits 2j, 2j + 1
    }
    const uint16_t d = oscar_scale_bits(norm, lv2);
    out[0] = (uint8_t) (d & 0xff);
    out[1] = (uint8_t) (d >> 8);
}

// Quantize 64 floats into one block (format and conventions above); cbs: oscar_tcq_scaled_codebook(cb).
OSCAR_HD void oscar_tcq_quantize_block(const float * cb, const int32_t * cbs, const float * x, uint8_t * out) {
    double  u[OSCAR_QK], norm = 0.0;
    uint8_t w[OSCAR_QK];
    if (!oscar_tcq_prepare(x, u, &norm, out)) return;
    oscar_tcq_encode(cbs, u, w);
    oscar_tcq_pack(cb, norm, w, out);
}

#endif // OSCAR_TCQ_BLOCK_H
