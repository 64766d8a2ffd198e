// The trellis blocks of oscar2 / oscar3 (oscar_tcq_block.h) decoded with AVX-512 VBMI, all 64 windows of a block at
// once and no table in memory: a byte permute gives each 64-bit lane the stream piece of 8 consecutive windows and
// a multishift cuts them out (8 bits at offsets 0, s, .., 7s); the codebook's halves are two byte planes of 256
// entries in eight registers, each plane two 128-entry permutes picked by the window's bit 7. Lane q holds windows
// 8 m_q, m = 0 2 1 3 4 6 5 7, so that interleaving the planes (within 128-bit lanes) leaves elements 0-15 and 32-47
// in the low words, 16-31 and 48-63 in the high ones. Included by oscar_tcq.c (chosen at run time) and by
// oscar_attn.c (compiled for AVX-512: the attention tile decodes into registers); each keeps its own tables.
#ifndef OSCAR_TCQ_VBMI_H
#define OSCAR_TCQ_VBMI_H

#include "oscar_impl.h"
#include "oscar_tcq_block.h"

#ifdef OSCAR_X86
#define OSCAR_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx2,fma,f16c")))

typedef struct { uint8_t perm[64], shift[64], plane[2][OSCAR_TCQ_STATES]; } oscar_vbmi_tables;

// The tables of width s for codebook cb.
static inline void oscar_vbmi_tables_init(oscar_vbmi_tables * t, int s, const float * cb) {
    static const int m[8] = { 0, 2, 1, 3, 4, 6, 5, 7 };
    for (int q = 0; q < 8; q++) {
        for (int i = 0; i < 8; i++) {
            t->perm[8 * q + i]  = (uint8_t) ((s * m[q] + i) % oscar_tcq_code_bytes(s));
            t->shift[8 * q + i] = (uint8_t) (s * i);
        }
    }
    for (int w = 0; w < OSCAR_TCQ_STATES; w++) {
        const uint16_t h = oscar_float_to_half_sat(cb[w]);
        t->plane[0][w] = (uint8_t) (h & 0xff);
        t->plane[1][w] = (uint8_t) (h >> 8);
    }
}

typedef struct { __m512i perm, shift, lo[4], hi[4]; __mmask64 code; } oscar_vbmi_regs;

OSCAR_VBMI static inline oscar_vbmi_regs oscar_vbmi_load(const oscar_vbmi_tables * t, int s) {
    oscar_vbmi_regs r;
    r.perm  = _mm512_loadu_si512(t->perm);
    r.shift = _mm512_loadu_si512(t->shift);
    for (int i = 0; i < 4; i++) {
        r.lo[i] = _mm512_loadu_si512(t->plane[0] + 64 * i);
        r.hi[i] = _mm512_loadu_si512(t->plane[1] + 64 * i);
    }
    r.code = (__mmask64) ((1ull << oscar_tcq_code_bytes(s)) - 1);  // no load past the block
    return r;
}

// Block b's 64 values, codebook[w_j] x scale, as four vectors in element order.
OSCAR_VBMI static inline void oscar_vbmi_block(const oscar_vbmi_regs * r, const uint8_t * b, __m512 x[4]) {
    const __m512i   c   = _mm512_permutexvar_epi8(r->perm, _mm512_maskz_loadu_epi8(r->code, b + 2));
    const __m512i   w   = _mm512_multishift_epi64_epi8(r->shift, c);
    const __mmask64 top = _mm512_movepi8_mask(w);  // windows 128-255
    const __m512i   lo  = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(r->lo[0], w, r->lo[1]),
                                                 _mm512_permutex2var_epi8(r->lo[2], w, r->lo[3]));
    const __m512i   hi  = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(r->hi[0], w, r->hi[1]),
                                                 _mm512_permutex2var_epi8(r->hi[2], w, r->hi[3]));
    const __m512i   h0  = _mm512_unpacklo_epi8(lo, hi), h1 = _mm512_unpackhi_epi8(lo, hi);
    const __m512    d   = _mm512_set1_ps(oscar_scale_avx2(b));
    x[0] = _mm512_mul_ps(d, _mm512_cvtph_ps(_mm512_castsi512_si256(h0)));
    x[1] = _mm512_mul_ps(d, _mm512_cvtph_ps(_mm512_castsi512_si256(h1)));
    x[2] = _mm512_mul_ps(d, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h0, 1)));
    x[3] = _mm512_mul_ps(d, _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h1, 1)));
}

#endif // OSCAR_X86
#endif // OSCAR_TCQ_VBMI_H
