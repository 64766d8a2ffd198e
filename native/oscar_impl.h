// Internal helpers shared by oscar.c and oscar_dot.c (not part of the API).
#ifndef OSCAR_IMPL_H
#define OSCAR_IMPL_H

#include <stdint.h>
#include <string.h>

extern const float oscar_levels2[4];
extern const float oscar_levels3[8];
extern const float oscar_levels4[16];

static inline float oscar_half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp  = (h >> 10) & 0x1f;
    uint32_t       man  = h & 0x3ff;
    uint32_t       bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal: renormalize
        int e = 113;
        while (!(man & 0x400)) { man <<= 1; e--; }
        bits = sign | ((uint32_t)e << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// Code of element i of a block's code bytes (layout in oscar.h).
static inline int oscar_code(int bits, const uint8_t * qs, int i) {
    switch (bits) {
        case 2:  return (qs[i % 16] >> (2 * (i / 16))) & 3;
        case 3:  return ((qs[i % 16] >> (2 * (i / 16))) & 3) | (((qs[16 + i % 8] >> (i / 8)) & 1) << 2);
        default: return (qs[i % 32] >> (4 * (i / 32))) & 15;
    }
}

static inline const float * oscar_levels_of(int bits) {
    return bits == 2 ? oscar_levels2 : bits == 3 ? oscar_levels3 : oscar_levels4;
}

static inline uint16_t oscar_block_scale(const uint8_t * block) {
    return (uint16_t)(block[0] | (block[1] << 8));
}

#endif // OSCAR_IMPL_H
