// OScaR KV-cache block formats: the one C API shared by ggml (through patches/) and Python (through cffi).
// A block holds 64 consecutive elements of a (Hadamard-rotated) K or V row, an fp16 scale and codes:
//   oscar2, oscar3: the bitshift-trellis codes (oscar_tcq_block.h): one circular stream of 64b bits (b = 2, 3),
//           element j = scale * codebook_b[8-bit window of the stream at bit bj], 256 entries (oscar_tcq_codebook)
//   oscar4: 4-bit indices into the Lloyd-Max codebook of N(0,1), applied to x * 8 / ||x||; code of element i:
//           (qs[i % 32] >> 4*(i / 32)) & 15
// Every scale is norm-preserving: ||x|| / ||decoded codes||, so a decoded block keeps the input's norm.
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

// Generic entry points; bits is 2, 3 or 4 and n a multiple of OSCAR_QK (callers check both). oscar_levels: the
// Lloyd-Max codebook of oscar4 (NULL for oscar2 and oscar3, whose codebooks are oscar_tcq_codebook's).
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

// Attention over several K/V sources with one softmax (oscar_attn.c): the main cache and the f16 tier of protected
// tokens. The function type is ggml's to_float shape.
typedef void (*oscar_to_float_fn)(const void * x, float * y, int64_t n);
typedef struct {
    const char *      k;           // n rows of dk elements, nbk bytes apart
    const char *      v;           // n rows of the output's dv elements, nbv bytes apart
    const uint16_t *  mask;        // fp16 additive mask values of query row i at mask + i mask_row (NULL: none);
    int64_t           mask_row;    //   -inf: the row is not seen
    int64_t           n;
    size_t            nbk, nbv;
    oscar_to_float_fn k_to_float;  // NULL: K rows are float32
    oscar_to_float_fn v_to_float;  // NULL: V rows are float32
    int32_t           k_bits;      // 2, 3: K rows are oscar2 / oscar3, decoded a tile at a time (oscar_tcq_rows_to_float)
    int32_t           v_bits;      //   instead of by k_to_float row by row; 0: by k_to_float (V alike)
} oscar_attn_src;
// The queries: g heads (h0 .. h0 + g - 1 of n_head, which read the same K/V rows) of each query row; query (i, j)
// at q + i q_row + j q_head (float32, dk). Logit l = scale * K.q (softcap != 0: softcap * tanh(scale * K.q /
// softcap)) + slope_j * mask_i, slope_j the ALiBi slope of head h0 + j (ggml's; 1 when max_bias is 0).
typedef struct {
    const float * q;
    int64_t       q_row, q_head, dk, dv;
    float         scale, softcap, max_bias;
    int64_t       h0, n_head;
    int           g;
} oscar_attn_query;
// How many query heads are done together: those of one KV head, when K and V have the same heads and neither
// mask differs by head; else 1.
int oscar_attn_group(int64_t n_head, int64_t n_head_k, int64_t n_head_v, int64_t mask_heads, int64_t mask2_heads);
// The rows query row i sees, as indices into the sources' rows taken in order (source 0's, then source 1's ...):
// those whose mask is not -inf. Returns their count; rows has room for all.
int64_t oscar_attn_visible(const oscar_attn_src * src, int nsrc, int64_t i, int32_t * rows);
// The part of query rows 0 .. nq - 1 (x the g heads) over n rows that all of them see (the same list), each K and
// V row decoded once for all: for query (i, j), part[(i g + j)(2 + dv) + ...] = M, S, sum_rows e^(l - M) v, M the
// largest l (-inf: none), S = sum e^(l - M). scratch: oscar_attn_scratch floats. Rows go in tiles of 16 in the
// list's order, and a query's arithmetic depends only on the list and its own q and mask: not on nq, the other
// queries, or masked rows between the listed ones.
size_t oscar_attn_scratch(int64_t dk, int64_t dv, int nq, int g);
void oscar_attn_part(const oscar_attn_src * src, int nsrc, const int32_t * rows, int64_t n,
                     const oscar_attn_query * qa, int nq, float * part, float * scratch);
// One query's running sums acc = (M, S, o[dv]): begin with the sink (NULL: none; it is one more logit with a zero
// value), fold in parts over disjoint rows, end with out[dv] = o / S (nothing seen and no sink: 0).
void oscar_attn_begin(float * acc, int64_t dv, const float * sink);
void oscar_attn_fold(float * acc, const float * part, int64_t dv);
void oscar_attn_end(const float * acc, int64_t dv, float * out);
// begin, fold nparts parts (part_stride floats apart) in their order, end; acc: 2 + dv floats of scratch.
void oscar_attn_merge(const float * parts, int nparts, int64_t part_stride, int64_t dv, const float * sink,
                      float * out, float * acc);
// ggml-cpu's schedule (patches/0005). A query row's visible rows are cut into pieces of OSCAR_ATTN_CHUNK, one part
// per piece, folded in order by every path: a query row then gets the same arithmetic under any thread count or
// batch size, and rows masked for it (a padded cache, other sequences' cells, tier rows of an earlier batch) change
// nothing. Restored states, llama-server's slots and prompts split into other batches give the same logits.
#define OSCAR_ATTN_CHUNK 256
// query rows of a batch done together
#define OSCAR_ATTN_QROWS 8
int64_t oscar_attn_chunks(int64_t n);  // the pieces of n rows
// Attention of nq <= OSCAR_ATTN_QROWS query rows x g heads over nsrc <= 2 sources (each row with its own mask):
// out of (i, j) at out + i out_row + j out_head (dv floats); sink: the g heads' sinks (NULL: none). The pieces
// that all rows see alike (a causal batch's common past) are done for all rows together, the rest row by row:
// each row gets the bits it would get alone. work: oscar_attn_rows_work floats (rows: the sources' rows in all).
size_t oscar_attn_rows_work(int64_t dk, int64_t dv, int nq, int g, int64_t rows);
void oscar_attn_rows(const oscar_attn_src * src, int nsrc, const oscar_attn_query * qa, int nq, const float * sink,
                     float * out, int64_t out_row, int64_t out_head, float * work);
// A decoding thread's own work: its oscar_attn_scratch (nq 1), then room for a list of all rows (int32).
size_t oscar_attn_decode_work(int64_t dk, int64_t dv, int g, int64_t rows);
// ggml-cpu's work buffer in floats for heads query heads in groups of g over rows K/V rows in all: decode (one
// query row: every head's part of every piece, kept for the merge, then each thread's oscar_attn_decode_work) or
// a batch (each thread's oscar_attn_rows_work); nth threads.
size_t oscar_attn_wsize(int64_t dk, int64_t dv, int64_t heads, int decode, int g, int nth, int64_t rows);

// The f16 tier's bookkeeping (oscar_tier.c). Sequence s owns slots [s (S + W), (s + 1)(S + W)); pos[slot] is the
// position held there (-1: empty), shift[slot] the position change not yet applied to its K (RoPE shift).
// A query at position q attends key position k from the tier when k <= q and (k < S or k > q - W), k is within
// a sliding-window layer's reach (q - k < n_swa; n_swa 0: no such limit), and only if the tier holds it; every
// other visible key comes from the main cache (oscar_tier_covers, below).
typedef struct {
    int32_t   n_seq, sinks, window;  // sequences, S, W
    int32_t * pos;                   // [n_seq (S + W)]
    int32_t * shift;                 // [n_seq (S + W)]
    int32_t   n_swa;                 // the layers' sliding window (llama.cpp's standard SWA), 0: none
} oscar_tier;
// The slot holding (seq, pos), or -1.
int32_t oscar_tier_find(const oscar_tier * t, int32_t seq, int32_t pos);
// Give n new tokens (in batch order) their slots: slot[i] = -1 for tokens that stay out (older than the whole
// window, or evicted again by a later token of the same batch). Returns how many were placed.
int32_t oscar_tier_place(oscar_tier * t, int32_t n, const int32_t * seq, const int32_t * pos, int32_t * slot);
// llama.cpp's sequence operations (p1 < 0: to the end; seq < 0 in seq_rm: every sequence). seq_cp returns the
// number of slot pairs whose rows the caller must copy (from[i] -> to[i], at most S + W).
void    oscar_tier_seq_rm  (oscar_tier * t, int32_t seq, int32_t p0, int32_t p1);
void    oscar_tier_seq_keep(oscar_tier * t, int32_t seq);
int32_t oscar_tier_seq_cp  (oscar_tier * t, int32_t src, int32_t dst, int32_t p0, int32_t p1, int32_t * from, int32_t * to);
void    oscar_tier_seq_add (oscar_tier * t, int32_t seq, int32_t p0, int32_t p1, int32_t delta);
void    oscar_tier_seq_div (oscar_tier * t, int32_t seq, int32_t p0, int32_t p1, int32_t d);
// fp16 mask rows (stride elements apart) of nq queries over the tier slots [slot0, slot0 + nslots) followed by
// nx extra keys (x_seq, x_pos: this batch's tokens when they are attended from the batch itself): 0 where the
// query attends that key from the tier, -inf elsewhere.
void    oscar_tier_mask(const oscar_tier * t, int32_t slot0, int32_t nslots, int32_t nq, const int32_t * q_seq,
                        const int32_t * q_pos, int32_t nx, const int32_t * x_seq, const int32_t * x_pos,
                        uint16_t * mask, int64_t stride);
// The main cache's fp16 mask rows of the same nq queries without the keys they take from the tier: a visible
// cell (cell_pos[j] >= 0, the position it holds; -1: empty) is dropped when the query's sequence has its
// position in the tier source (t's slots plus the nx extra keys, as in oscar_tier_mask) and covers it.
void    oscar_tier_mask_main(const oscar_tier * t, int32_t nq, const int32_t * q_seq, const int32_t * q_pos,
                             int32_t nx, const int32_t * x_seq, const int32_t * x_pos,
                             int64_t n_kv, const int32_t * cell_pos, uint16_t * mask, int64_t stride);

// Calibration statistics (oscar_calib.c). oscar_hadamard: x = H x on each n-element chunk of x (n a power of two),
// H the orthonormal Walsh-Hadamard matrix of llama.cpp's attention rotation. oscar_calib_add: sum[i] += x[i] and
// sumsq[i] += x[i]^2 over rows skip..n_rows-1 of row_len floats, row_stride bytes apart, each first rotated with
// oscar_hadamard(rot) unless rot is 0. Returns -1 (adding nothing) for row_len above OSCAR_CALIB_MAX_ROW or a rot
// that is not a power of two dividing row_len.
#define OSCAR_CALIB_MAX_ROW 16384
void oscar_hadamard(float * x, int64_t len, int32_t n);
int  oscar_calib_add(double * sum, double * sumsq, const float * rows, int64_t n_rows, int64_t row_len,
                     size_t row_stride, int64_t skip, int32_t rot);
// Model fingerprint (oscar_fingerprint.c): identifies the tensors a calibration belongs to. FNV-1a 64 over every
// tensor's name, ggml type, 4 dims (1 past its own) and byte size, and 64 pieces of 256 bytes spread evenly over
// its data (all of it when smaller), in the order given. Writes "oscar-fp1:<16 hex digits>" into out (OSCAR_FP_LEN
// bytes); returns 0, -1 when the file cannot be read, -2 for tensor data past the file's end.
typedef struct {
    const char * name;
    uint32_t     type;     // ggml type
    uint64_t     ne[4];    // 1 past the tensor's own dims
    uint64_t     offset;   // of the data, from the start of the file's data section
    uint64_t     nbytes;
} oscar_fp_tensor;
#define OSCAR_FP_LEN 32
int  oscar_fingerprint(const char * path, uint64_t data_start, const oscar_fp_tensor * t, int64_t n, char * out);

// The per-layer affine transform that applies a calibration in llama.cpp's graph (oscar_calib.c). For n channels
// (heads of `group` channels) with mean m and standard deviation s, out gets 4 planes of n floats: scale,
// 1/scale, -mean/scale, mean. scale is s floored at 1e-6 x the RMS of its head's s, and 1 with mean 0 for a head
// whose s are all 0 or not finite. keep_mean 0 takes every mean as 0 (attention sinks, logit soft-capping).
void oscar_calib_affine(const float * mean, const float * std, int64_t n, int64_t group, int keep_mean, float * out);

// What an OScaR cache of llama.cpp gets (oscar_plan.c): pure decisions, made once per cache when llama.cpp creates
// it (native/llama/llama-kv-oscar.cpp) and tested through cffi. Messages are one line for llama.cpp's error or log.

// The f16 tier. Returns 0 for no tier (no OScaR type, or sinks = window = 0), 1 for a tier of sinks + window
// slots per sequence, -1 when the options ask for a tier this cache cannot have: err says why and how to turn it off.
typedef struct {
    int32_t sinks, window;     // requested (llama_context_params.oscar_sinks, oscar_window)
    int32_t oscar_k, oscar_v;  // K, V of an OScaR type
    int32_t n_seq_max;
    int32_t flash_attn;        // V rows untransposed (the tier is attended by flash attention only)
    int32_t mla;               // K-only (MLA) cache
    int32_t swa_type;          // llama_swa_type: 0 none, 1 standard, 2 chunked, 3 symmetric
    int32_t shares_cells;      // the cells belong to another context's cache
    int32_t wired;             // a cache kind whose attention calls the tier's hooks
} oscar_tier_layout;
int oscar_tier_plan(const oscar_tier_layout * l, char * err, size_t err_len);

// The calibration: which of K and V a cache stores standardized. Returns 1 with out set when it applies the model's
// calibration, 0 when not (err: a notice why, "" for a cache without an OScaR type), -1 when it must refuse
// (the calibration was measured after other rotations): err says why.
typedef struct {
    int32_t oscar_k, oscar_v;        // K, V of an OScaR type
    int32_t enabled;                 // llama_context_params.oscar_calib
    int32_t present;                 // the model has a calibration that fits it
    int32_t rot_k, rot_v;            // this cache's Hadamard sizes (0: none)
    int32_t cal_rot_k, cal_rot_v;    // the calibration's
    int32_t mla;                     // K-only (MLA) cache
    int32_t partial_rope;            // a layer ropes only part of its K head (the K-shift undoes whole heads)
} oscar_calib_layout;
typedef struct { int32_t k, v; } oscar_calib_use;
int oscar_calib_plan(const oscar_calib_layout * l, oscar_calib_use * out, char * err, size_t err_len);
// Whether a layer's transform keeps the mean (exact only while every score of a query shifts alike and the weights
// sum to 1): learned attention sinks drop both means, logit soft-capping the K mean.
int oscar_calib_keep_mean(int is_k, int attn_sinks, int soft_cap);

// What a saved cache state was made with (the first bytes of each cache's state). oscar_state_check: 0 when a
// state saved with `saved` can be read into a cache made with `cur`, else -1 with err naming every difference.
#define OSCAR_STATE_MAGIC 0x4b43534f  // "OSCK"
#define OSCAR_STATE_VERSION 3  // 2: oscar2 is the trellis code; 3: oscar3 too
typedef struct {
    uint32_t magic, version;
    int32_t  type_k, type_v;      // ggml types
    int32_t  sinks, window;       // the f16 tier (0, 0: none)
    int32_t  calib_k, calib_v;    // stored standardized
    uint64_t calib_hash;          // of the planes applied (0: none)
} oscar_state_hdr;
int oscar_state_check(const oscar_state_hdr * saved, const oscar_state_hdr * cur, char * err, size_t err_len);
// FNV-1a 64 of n bytes, continuing from h (start with OSCAR_FNV_SEED, defined below).
uint64_t oscar_fnv1a(uint64_t h, const void * data, size_t n);

// The tier slots a state of sequence seq (-1: every sequence) holds, in slot order: writes them to out (room for
// every slot), returns how many.
int32_t oscar_tier_state_slots(const oscar_tier * t, int32_t seq, int32_t * out);

// Checks a calibration's statistics (n_layer * n_head * dim of each, channel fastest) before they become planes.
// Every value finite; a head's std all > 0, their RMS r within [OSCAR_CALIB_RMS_MIN, OSCAR_CALIB_RMS_MAX], each std
// within [r / OSCAR_CALIB_SPREAD, r * OSCAR_CALIB_SPREAD] and each |mean| <= OSCAR_CALIB_MEAN_MAX * r (the bounds
// and the spread of real calibrations they were set from: docs/calibration.md). Returns 0, or -1 with err naming the
// key, the index and what is wrong. oscar_calib_bounds: the four bounds, in that order.
void oscar_calib_bounds(double * out);
int oscar_calib_check(const float * mean, const float * std, int32_t n_layer, int32_t n_head, int32_t dim,
                      const char * mean_key, const char * std_key, char * err, size_t err_len);

// The bitshift-trellis codes (oscar_tcq.c; format, encoder and conventions in oscar_tcq_block.h): the 256 entries of
// the codebook of oscar2 (bits 2) or oscar3 (bits 3); NULL for other bits.
const float * oscar_tcq_codebook(int bits);
// Rows rows[0..n-1] of oscar2 (bits 2) or oscar3 (3) rows of len elements, stride bytes apart from base, decoded to
// out (len floats a row): as oscar_dequantize_row row by row, with the decoder's set-up done once a call.
void oscar_tcq_rows_to_float(int bits, const char * base, size_t stride, const int64_t * rows, int n, int64_t len,
                             float * out);
/* cffi-end */

#define OSCAR_FNV_SEED 0xcbf29ce484222325ull
#define OSCAR_CALIB_RMS_MIN 1e-6
#define OSCAR_CALIB_RMS_MAX 1e4
#define OSCAR_CALIB_SPREAD 64.0
#define OSCAR_CALIB_MEAN_MAX 256.0

// A model's calibration as llama.cpp reads it (oscar_calib_gguf.c, compiled into libllama only: it reads through
// ggml's gguf API). The caller gives the model's shape and arrays of n_layer*n_head_kv*head_dim floats; returns 0
// when the file has no calibration, 1 when it read one that fits (rot_k/rot_v set to the rotation sizes it was
// measured after), -1 with a message in err naming every mismatch (layers, KV heads, head sizes, fingerprint) or
// what is broken (version, a missing key, an array's type or length).
struct gguf_context;
typedef struct {
    int32_t n_layer, n_head_kv, head_dim_k, head_dim_v;  // the model's
    int32_t rot_k, rot_v;                                  // out
} oscar_calib_shape;
int oscar_calib_read(const struct gguf_context * g, const char * path, oscar_calib_shape * shape,
                     float * k_mean, float * k_std, float * v_mean, float * v_std, char * err, size_t err_len);
// Whether llama.cpp can map the file's tensor data (oscar_calib_gguf.c): every tensor must start on ggml's
// TENSOR_ALIGNMENT in the file, or the mapped buffer's start fails an assert and the process aborts. 0, or -1 with
// err naming the first tensor that does not.
#define OSCAR_TENSOR_ALIGNMENT 32
int oscar_gguf_check_alignment(const struct gguf_context * g, char * err, size_t err_len);

// Whether a query at position q takes key position k from the tier (if the tier holds it).
static inline int oscar_tier_covers(const oscar_tier * t, int32_t k, int32_t q) {
    return k <= q && (k < t->sinks || k > q - t->window) && (t->n_swa <= 0 || q - k < t->n_swa);
}

#ifdef __cplusplus
}
#endif

#endif // OSCAR_H
