#pragma once
// oscar-gguf inside libllama: what an OScaR cache adds to a llama_kv_cache (the f16 tier of protected tokens and the
// calibration's per-channel transform), the model's calibration, and the C API that reports them (docs/tier.md,
// docs/calibration.md). llama.cpp reaches it through one-line hooks (patches/0006); what a cache gets is decided by
// the pure functions of native/oscar_plan.c.

#include "ggml-cpp.h"
#include "oscar.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct ggml_context;
struct ggml_tensor;
struct ggml_cgraph;
struct gguf_context;
struct llama_ubatch;
struct llama_cparams;
struct llama_hparams;
struct llama_model;
struct llama_memory_i;
struct llama_memory_params;
class  llama_kv_cache;
class  llama_kv_cache_context;
class  llama_io_write_i;
class  llama_io_read_i;
class  llm_graph_result;

// llama_context_params' OScaR options, carried to the caches by the memory params
struct llama_kv_oscar_params {
    int32_t sinks  = 0;  // f16 tier: first tokens of each sequence
    int32_t window = 0;  // f16 tier: newest tokens of each sequence
    int32_t calib  = 0;  // apply the model's calibration
};

// The model's calibration (oscar.* metadata), read at model load; arrays [n_layer][n_head_kv][head size].
struct llama_oscar_calib {
    bool        present = false;
    std::string error;  // why it does not fit the model: a cache of an OScaR type refuses it with this
    int32_t     rot_k = 0, rot_v = 0;  // Hadamard sizes the statistics were measured after
    std::vector<float> k_mean, k_std, v_mean, v_std;

    void load(const gguf_context * meta, const std::string & fname, const llama_hparams & hparams);
};

// The tier's K/V sources of one layer's attention and their mask (null: no tier)
struct llama_kv_oscar_attn {
    ggml_tensor * k    = nullptr;  // [head size, n_head_kv, rows, n_stream] f16
    ggml_tensor * v    = nullptr;
    ggml_tensor * mask = nullptr;  // [rows, tokens per stream, 1, n_stream] f16
};

// One cache's tier inputs of one graph (members of llama.cpp's attention inputs)
struct llama_kv_oscar_input {
    ggml_tensor * idxs = nullptr;  // I64 [n_tokens]: each token's tier slot (or the spare row)
    ggml_tensor * mask = nullptr;  // F16 [slots per stream (+ tokens per stream), tokens per stream, 1, n_stream]
    std::vector<llama_kv_oscar_attn> by_layer;  // per cache layer, what its writing layer built (layers that reuse
                                                // another layer's K/V attend that)

    // graph inputs for this ubatch (none when the cache has no tier)
    void build(ggml_context * ctx, const llama_kv_cache_context * mctx, const llama_ubatch & ubatch,
               const llama_cparams & cparams);
    // after llama.cpp filled kq_mask: the tier's slots and mask, and kq_mask without the keys the tier gives
    void set_input(const llama_kv_cache_context * mctx, const llama_ubatch * ubatch, ggml_tensor * kq_mask) const;
    bool can_reuse(const llama_kv_cache_context * mctx, const llama_ubatch & ubatch) const;
    // layer il's tier sources; writes this ubatch's K/V rows (k_cur, v_cur; null in a layer that reuses another
    // layer's K/V) into the tier
    llama_kv_oscar_attn attn(ggml_context * ctx, ggml_cgraph * gf, const llama_kv_cache_context * mctx,
                             const llama_ubatch & ubatch, ggml_tensor * k_cur, ggml_tensor * v_cur, int32_t il);
};

// The calibration's transform around layer il's attention: q, k, v as they enter the cache (after the Hadamard
// rotation; k, v may be null), and the attention output [head size * n_head, n_tokens] before the inverse rotation
void          llama_kv_oscar_calib_in (ggml_context * ctx, const llama_kv_cache_context * mctx, int32_t il,
                                       ggml_tensor *& q, ggml_tensor *& k, ggml_tensor *& v);
ggml_tensor * llama_kv_oscar_calib_out(ggml_context * ctx, const llama_kv_cache_context * mctx, int32_t il,
                                       ggml_tensor * cur);
// the tier as the flash-attention node's second K/V source (build_attn_mha; v_trans caches have no tier)
void          llama_kv_oscar_add_tier (ggml_context * ctx, ggml_tensor * fa, const llama_kv_oscar_attn * tier);
// graph nodes the module adds per model (llama_context::graph_max_nodes)
uint32_t      llama_kv_oscar_graph_nodes(const llama_model & model);

// What an OScaR cache adds to one llama_kv_cache. Every llama_kv_cache of a memory that llama.cpp's graphs attend
// gets one (attach), so every state it saves says what it was made with.
class llama_kv_oscar {
public:
    // at the end of llama_model::create_memory: one for each llama_kv_cache of mem; throws when the options ask for
    // what a cache cannot have
    static void attach(llama_memory_i * mem, const llama_memory_params & params);

    llama_kv_oscar(llama_kv_cache & kv, const llama_kv_oscar_params & params, bool wired);
    ~llama_kv_oscar();

    bool tier_on() const { return n_slots > 0; }

    // the cache's operations (same names), followed
    void clear(bool data);
    void seq_rm  (int32_t seq, int32_t p0, int32_t p1);
    void seq_cp  (int32_t src, int32_t dst, int32_t p0, int32_t p1);
    void seq_keep(int32_t seq);
    void seq_add (int32_t seq, int32_t p0, int32_t p1, int32_t shift);
    void seq_div (int32_t seq, int32_t p0, int32_t p1, int32_t d);
    void place(const llama_ubatch & ubatch);  // apply_ubatch: this ubatch's tokens get their slots
    void shift_applied();                     // update() ran the K-shift

    // prepare() places ubatches to try them and then undoes it: the tier's bookkeeping goes back with the cells
    struct undo {
        llama_kv_oscar * o;
        std::vector<int32_t> pos, shift;
        explicit undo(llama_kv_oscar * o);
        ~undo();
    };

    // the K-shift (llama_kv_cache::build_rope_shift / build_graph_shift): calibrated K rows back to rotated K and
    // forward again, and the tier's K re-roped with its positions
    ggml_tensor * k_unstore(ggml_context * ctx, ggml_tensor * k, int32_t il) const;
    ggml_tensor * k_store  (ggml_context * ctx, ggml_tensor * k, int32_t il) const;
    void build_shift(llm_graph_result * res, ggml_context * ctx, ggml_cgraph * gf, const llama_cparams & cparams,
                     ggml_tensor * k_rot) const;

    // state: a header first (read before anything changes: a state made with other settings is refused, in words,
    // with the cache untouched), the tier's rows after the cells
    void state_write_header(llama_io_write_i & io) const;
    void state_read_header (llama_io_read_i  & io) const;
    void state_write_tier  (llama_io_write_i & io, int32_t seq) const;
    void state_read_tier   (llama_io_read_i  & io, int32_t seq);

    // the calibration's planes of layer il: F32 [head size, n_head_kv, 4] scale, 1/scale, -mean/scale, mean (null:
    // none)
    ggml_tensor * calib(bool is_k, int32_t il) const;

    // what it holds (llama_oscar_get_cache_info)
    int32_t sinks() const { return tier_sinks; }
    int32_t window() const { return tier_window; }
    size_t  tier_bytes() const;
    bool    calibrated_k() const { return use.k != 0; }
    bool    calibrated_v() const { return use.v != 0; }
    int32_t rot_size(bool is_k) const;
    void    info(struct llama_oscar_cache_info & r) const;

private:
    friend struct llama_kv_oscar_input;

    struct layer {
        ggml_tensor * k_tier  = nullptr;  // f16 [n_embd_k_gqa, n_slots + 1 spare row]
        ggml_tensor * v_tier  = nullptr;
        ggml_tensor * k_calib = nullptr;
        ggml_tensor * v_calib = nullptr;
    };

    llama_kv_cache & kv;
    std::vector<layer> layers;  // as kv's layers
    std::vector<std::pair<ggml_context_ptr, ggml_backend_buffer_ptr>> bufs;  // its own: clear() keeps planes

    int32_t tier_sinks = 0, tier_window = 0, per_seq = 0, n_slots = 0;
    std::vector<int32_t> pos, shift;  // per slot: the position held (-1: empty), the shift not applied to its K
    std::vector<int32_t> pos_prev;    // pos before the current ubatch was placed (the prefill mask reads it)
    std::vector<int32_t> dst;         // per token of the current ubatch: its slot, or the spare row
    oscar_calib_use use = { 0, 0 };
    uint64_t calib_hash = 0;

    // the tier's streams of a ubatch: ns streams from cache stream s0, stream s holding slots [slot0 + s*slots, +slots)
    struct streams {
        uint32_t ns, s0, slot0, slots;
    };
    streams streams_of(const llama_ubatch & ubatch) const;

    oscar_tier view() const;  // the bookkeeping as native/oscar_tier.c takes it
    int32_t kv_layer(int32_t il) const;  // the cache's layer index of model layer il
    const int32_t * cell_pos(uint32_t stream, int64_t & n) const;  // every cell's position (-1: empty)
    oscar_state_hdr header() const;
    void alloc(const char * name_tag);
    void copy_rows(const int32_t * from, const int32_t * to, int32_t n);
    ggml_tensor * held(ggml_context * ctx, bool is_k, int32_t il, uint32_t slot0, uint32_t n, uint32_t n_stream) const;
};
