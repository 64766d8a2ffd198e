// OScaR KV-cache block formats: the one C API shared by ggml (through patches/) and Python (through cffi).
// A block holds 64 consecutive elements of a (Hadamard-rotated) K or V row:
//   uint16 d        fp16 norm-preserving scale, ||x|| / ||levels[codes]||
//   codes           b-bit indices into the Lloyd-Max codebook of N(0,1), applied to x * 8 / ||x||
// Code of element i (strided so that SIMD code unpacks contiguous runs):
//   oscar2: (qs[i % 16] >> 2*(i / 16)) & 3
//   oscar3: low two bits as oscar2 in qs[0..15], high bit (qs[16 + i % 8] >> (i / 8)) & 1
//   oscar4: (qs[i % 32] >> 4*(i / 32)) & 15
// Special values: a block with a NaN decodes to NaN; +-Inf count as +-FLT_MAX; an all-zero block decodes
// to zeros; the scale saturates at the largest finite fp16 (65504) and underflows to subnormals or zero.
#ifndef OSCAR_H
#define OSCAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cffi-begin */
#define OSCAR_QK 64
#define OSCAR2_BLOCK_BYTES 18
#define OSCAR3_BLOCK_BYTES 26
#define OSCAR4_BLOCK_BYTES 34

// Generic entry points; bits is 2, 3 or 4 and n a multiple of OSCAR_QK (callers check both).
size_t        oscar_block_bytes(int bits);
const float * oscar_levels(int bits);
void          oscar_quantize_row(int bits, const float * x, void * y, int64_t n);
void          oscar_dequantize_row(int bits, const void * x, float * y, int64_t n);
float         oscar_dot_row(int bits, const void * x, const float * y, int64_t n);

// ggml-shaped entry points: type-traits rows point straight at these.
void   oscar2_quantize_row(const float * x, void * y, int64_t n);
void   oscar3_quantize_row(const float * x, void * y, int64_t n);
void   oscar4_quantize_row(const float * x, void * y, int64_t n);
void   oscar2_dequantize_row(const void * x, float * y, int64_t n);
void   oscar3_dequantize_row(const void * x, float * y, int64_t n);
void   oscar4_dequantize_row(const void * x, float * y, int64_t n);
size_t oscar2_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t oscar3_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t oscar4_quantize(const float * src, void * dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
// s = dot(x quantized, y float32): the CPU flash-attention K.Q product (vec_dot_type F32).
void   oscar2_vec_dot_f32(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc);
void   oscar3_vec_dot_f32(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc);
void   oscar4_vec_dot_f32(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc);
/* cffi-end */

#ifdef __cplusplus
}
#endif

#endif // OSCAR_H
