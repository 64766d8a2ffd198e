// oscar-gguf inside libllama (llama-kv-oscar.h): the f16 tier and the calibration of one KV cache, the model's
// calibration, the C API. The row math lives in native/ (oscar_tier.c, oscar_calib.c, oscar_plan.c).
#include "llama-kv-oscar.h"

#include "llama-cparams.h"
#include "llama-graph.h"
#include "llama-impl.h"
#include "llama-io.h"
#include "llama-kv-cache-iswa.h"
#include "llama-kv-cache.h"
#include "llama-memory-hybrid-iswa.h"
#include "llama-memory-hybrid.h"
#include "llama-model.h"
#include "llama.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>
#include <typeinfo>

static bool is_oscar(ggml_type t) {
    return t == GGML_TYPE_OSCAR2 || t == GGML_TYPE_OSCAR3 || t == GGML_TYPE_OSCAR4;
}

// the (first) sequence and the position of each token of a ubatch, as native/oscar_tier.c takes them
static void seq_pos_of(const llama_ubatch & ub, std::vector<int32_t> & seq, std::vector<int32_t> & pos) {
    seq.resize(ub.n_tokens);
    pos.resize(ub.n_tokens);
    for (uint32_t i = 0; i < ub.n_tokens; ++i) {
        seq[i] = ub.seq_id[i][0];
        pos[i] = ub.pos[i];
    }
}

//
// attaching to a memory's caches
//

// Every llama_kv_cache of mem, and whether llama.cpp's graphs attend it through the tier's hooks (the plain and the
// sliding-window attention inputs, and the hybrid memory's attention); the rest of mem's kinds are not wired.
static void caches_of(llama_memory_i * mem, std::vector<std::pair<llama_kv_cache *, bool>> & out, bool & known) {
    known = true;
    if (!mem) {
        return;
    }
    if (typeid(*mem) == typeid(llama_kv_cache)) {
        out.push_back({ static_cast<llama_kv_cache *>(mem), true });
    } else if (auto * iswa = dynamic_cast<llama_kv_cache_iswa *>(mem); iswa && typeid(*mem) == typeid(llama_kv_cache_iswa)) {
        out.push_back({ iswa->get_base(), true });
        out.push_back({ iswa->get_swa(),  true });
    } else if (typeid(*mem) == typeid(llama_memory_hybrid)) {
        out.push_back({ static_cast<llama_memory_hybrid *>(mem)->get_mem_attn(), true });
    } else if (typeid(*mem) == typeid(llama_memory_hybrid_iswa)) {  // calibrated through the iSWA attention, no tier
        auto * iswa = static_cast<llama_memory_hybrid_iswa *>(mem)->get_mem_attn();
        out.push_back({ iswa->get_base(), false });
        out.push_back({ iswa->get_swa(),  false });
    } else {
        known = false;
    }
}

void llama_kv_oscar::attach(llama_memory_i * mem, const llama_memory_params & params) {
    std::vector<std::pair<llama_kv_cache *, bool>> caches;
    bool known = true;
    caches_of(mem, caches, known);
    if (!known) {  // a cache kind of its own: the plan says whether that is fine for these options
        oscar_tier_layout l = {};
        l.sinks = params.oscar.sinks;
        l.window = params.oscar.window;
        l.oscar_k = is_oscar(params.type_k);
        l.oscar_v = is_oscar(params.type_v);
        l.flash_attn = 1;
        char err[512];
        if (oscar_tier_plan(&l, err, sizeof(err)) != 0) {
            throw std::runtime_error(err);
        }
        return;
    }
    for (auto & [kv, wired] : caches) {
        if (kv) {
            kv->oscar = std::make_shared<llama_kv_oscar>(*kv, params.oscar, wired);
        }
    }
}

// Each cache device must write the OScaR types: one without them (a stock rpc-server, a backend oscar-gguf has no
// kernels for) is refused here, before a graph would abort on it.
static void check_device(int32_t il, const char * what, ggml_tensor * t) {
    if (!t || !is_oscar(t->type) || !t->buffer) {
        return;
    }
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer));
    ggml_init_params ip = { 4*ggml_tensor_overhead(), nullptr, true };
    ggml_context_ptr ctx(ggml_init(ip));
    ggml_tensor * dst = ggml_view_2d(ctx.get(), t, t->ne[0], t->ne[1], t->nb[1], 0);
    ggml_tensor * op = ggml_set_rows(ctx.get(), dst, ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, t->ne[0], 1),
                                     ggml_new_tensor_1d(ctx.get(), GGML_TYPE_I64, 1));
    if (dev && !ggml_backend_dev_supports_op(dev, op)) {
        throw std::runtime_error(std::string("oscar-gguf: layer ") + std::to_string(il) + "'s " + what +
            " cache is on " + ggml_backend_dev_name(dev) + " (" + ggml_backend_dev_description(dev) +
            "), which cannot hold " + ggml_type_name(t->type) + ": a backend or rpc-server without oscar-gguf's "
            "types (use the ggml-rpc-server ./install.sh builds, or another cache type there)");
    }
}

llama_kv_oscar::llama_kv_oscar(llama_kv_cache & kv, const llama_kv_oscar_params & params, bool wired) : kv(kv) {
    const llama_hparams & hp = kv.hparams;
    layers.resize(kv.layers.size());
    char err[512] = "";
    for (const auto & l : kv.layers) {
        check_device(l.il, "K", l.k);
        check_device(l.il, "V", l.v);
    }

    bool partial_rope = false;
    for (const auto & l : kv.layers) {
        partial_rope |= hp.has_rope(l.il) && hp.n_rot(l.il) != hp.n_embd_head_k(l.il);
    }

    oscar_tier_layout tl = {};
    tl.sinks        = params.sinks;
    tl.window       = params.window;
    tl.oscar_k      = is_oscar(kv.type_k());
    tl.oscar_v      = is_oscar(kv.type_v());
    tl.n_seq_max    = (int32_t) kv.n_seq_max;
    tl.flash_attn   = !kv.v_trans;
    tl.mla          = hp.is_mla();
    tl.swa_type     = (int32_t) kv.swa_type;
    tl.shares_cells = kv.other != nullptr;
    tl.wired        = wired;
    const int tier = oscar_tier_plan(&tl, err, sizeof(err));
    if (tier < 0) {
        throw std::runtime_error(err);
    }
    if (tier > 0) {
        tier_sinks  = params.sinks;
        tier_window = params.window;
        per_seq     = tier_sinks + tier_window;
        n_slots     = per_seq * (int32_t) kv.n_seq_max;
        pos.assign(n_slots, -1);
        shift.assign(n_slots, 0);
    }

    const llama_oscar_calib & cal = kv.model.oscar_calib;
    oscar_calib_layout cl = {};
    cl.oscar_k      = tl.oscar_k;
    cl.oscar_v      = tl.oscar_v;
    cl.enabled      = params.calib != 0;
    cl.present      = cal.present;
    cl.rot_k        = rot_size(true);
    cl.rot_v        = rot_size(false);
    cl.cal_rot_k    = cal.rot_k;
    cl.cal_rot_v    = cal.rot_v;
    cl.mla          = tl.mla;
    cl.partial_rope = partial_rope;
    if ((cl.oscar_k || cl.oscar_v) && cl.enabled && cal.present && !cal.error.empty()) {
        throw std::runtime_error("oscar-gguf: " + cal.error + "; calibrate this model again, or turn the calibration "
                                 "off (oscar_calib = 0, --oscar-calib off)");
    }
    const int calib = kv.other ? 0 : oscar_calib_plan(&cl, &use, err, sizeof(err));
    if (calib < 0) {
        throw std::runtime_error(err);
    }
    if (err[0] && !kv.other) {
        LLAMA_LOG_INFO("%s: %s\n", __func__, err);
    }

    alloc(kv.swa_type == LLAMA_SWA_TYPE_NONE ? "" : "swa_");

    if (kv.other && kv.other->oscar) {  // cells shared with another cache: its K/V, so its calibration
        use = kv.other->oscar->use;
        calib_hash = kv.other->oscar->calib_hash;
        for (size_t i = 0; i < layers.size(); ++i) {
            layers[i].k_calib = kv.other->oscar->calib(true,  kv.layers[i].il);
            layers[i].v_calib = kv.other->oscar->calib(false, kv.layers[i].il);
        }
    }

    if (tier_on()) {
        LLAMA_LOG_INFO("%s: oscar-gguf f16 tier: %d sinks + %d window per sequence, %u sequences, %7.2f MiB\n",
                       __func__, tier_sinks, tier_window, kv.n_seq_max, tier_bytes() / (1024.0f * 1024.0f));
    }
    if (use.k || use.v) {
        bool sinks = false;
        for (const auto & l : kv.layers) {
            sinks |= kv.model.layers[l.il].attn_sinks != nullptr;
        }
        LLAMA_LOG_INFO("%s: oscar-gguf: calibration applied to %s%s%s\n", __func__,
                       use.k && use.v ? "K and V" : use.k ? "K" : "V",
                       sinks ? " (means left out: attention sinks)" : "",
                       !sinks && use.k && hp.attn_soft_cap ? " (K mean left out: soft-capping)" : "");
    }
}

llama_kv_oscar::~llama_kv_oscar() = default;

int32_t llama_kv_oscar::rot_size(bool is_k) const {  // the size llama.cpp's own rotation input has
    ggml_init_params ip = { ggml_tensor_overhead(), nullptr, true };
    ggml_context_ptr ctx(ggml_init(ip));
    ggml_tensor * rot = is_k ? kv.build_input_k_rot(ctx.get()) : kv.build_input_v_rot(ctx.get());
    return rot ? (int32_t) rot->ne[0] : 0;
}

// The tier's rows and the calibration's planes, in buffers of their own on each layer's cache device.
void llama_kv_oscar::alloc(const char * name_tag) {
    const llama_hparams & hp = kv.hparams;
    const llama_oscar_calib & cal = kv.model.oscar_calib;
    std::map<ggml_backend_buffer_type_t, ggml_context_ptr> ctxs;
    for (size_t i = 0; i < layers.size(); ++i) {
        const auto & kl = kv.layers[i];
        layer & l = layers[i];
        const bool want_k = use.k && !kv.other, want_v = use.v && !kv.other;
        if (!tier_on() && !want_k && !want_v) {
            continue;
        }
        ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(kl.k->buffer);
        ggml_context_ptr & ctx = ctxs[buft];
        if (!ctx) {
            ggml_init_params ip = { 4*layers.size()*ggml_tensor_overhead(), nullptr, true };
            ctx.reset(ggml_init(ip));
        }
        const int64_t n_head_kv = hp.n_head_kv(kl.il);
        if (tier_on()) {
            l.k_tier = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F16, hp.n_embd_k_gqa(kl.il), n_slots + 1);
            l.v_tier = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F16, hp.n_embd_v_gqa(kl.il), n_slots + 1);
            ggml_format_name(l.k_tier, "oscar_%sk_tier_l%d", name_tag, kl.il);
            ggml_format_name(l.v_tier, "oscar_%sv_tier_l%d", name_tag, kl.il);
        }
        if (want_k) {
            l.k_calib = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, hp.n_embd_head_k(kl.il), n_head_kv, 4);
            ggml_format_name(l.k_calib, "oscar_%sk_calib_l%d", name_tag, kl.il);
        }
        if (want_v) {
            l.v_calib = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, hp.n_embd_head_v(kl.il), n_head_kv, 4);
            ggml_format_name(l.v_calib, "oscar_%sv_calib_l%d", name_tag, kl.il);
        }
    }
    for (auto & [buft, ctx] : ctxs) {
        ggml_backend_buffer_t buf = hp.no_alloc ? ggml_backend_buft_alloc_buffer(buft, 0)
                                                : ggml_backend_alloc_ctx_tensors_from_buft(ctx.get(), buft);
        if (!buf) {
            throw std::runtime_error("oscar-gguf: failed to allocate the f16 tier's and the calibration's buffer");
        }
        if (hp.no_alloc) {
            for (ggml_tensor * t = ggml_get_first_tensor(ctx.get()); t; t = ggml_get_next_tensor(ctx.get(), t)) {
                t->buffer = buf;
            }
        } else {
            ggml_backend_buffer_clear(buf, 0);
        }
        bufs.emplace_back(std::move(ctx), ggml_backend_buffer_ptr(buf));
    }
    if (hp.no_alloc || (!use.k && !use.v) || kv.other) {
        return;
    }
    calib_hash = OSCAR_FNV_SEED;
    std::vector<float> planes;
    for (size_t i = 0; i < layers.size(); ++i) {
        const uint32_t il = kv.layers[i].il;
        for (const bool is_k : { true, false }) {
            ggml_tensor * t = is_k ? layers[i].k_calib : layers[i].v_calib;
            if (!t) {
                continue;
            }
            const int64_t n = t->ne[0]*t->ne[1];
            const size_t off = (size_t) il*n;
            const bool keep = oscar_calib_keep_mean(is_k, kv.model.layers[il].attn_sinks != nullptr, hp.attn_soft_cap);
            planes.resize(4*n);
            oscar_calib_affine((is_k ? cal.k_mean : cal.v_mean).data() + off, (is_k ? cal.k_std : cal.v_std).data() + off,
                               n, t->ne[0], keep, planes.data());
            ggml_backend_tensor_set(t, planes.data(), 0, ggml_nbytes(t));
            calib_hash = oscar_fnv1a(calib_hash, planes.data(), planes.size()*sizeof(float));
        }
    }
}

size_t llama_kv_oscar::tier_bytes() const {
    size_t n = 0;
    for (const auto & l : layers) {
        n += l.k_tier ? ggml_nbytes(l.k_tier) + ggml_nbytes(l.v_tier) : 0;
    }
    return n;
}

ggml_tensor * llama_kv_oscar::calib(bool is_k, int32_t il) const {
    const auto it = kv.map_layer_ids.find(il);
    if (it == kv.map_layer_ids.end()) {
        return nullptr;
    }
    return is_k ? layers[it->second].k_calib : layers[it->second].v_calib;
}

int32_t llama_kv_oscar::kv_layer(int32_t il) const {
    return kv.map_layer_ids.at(il);
}

const int32_t * llama_kv_oscar::cell_pos(uint32_t stream, int64_t & n) const {
    static_assert(sizeof(llama_pos) == sizeof(int32_t), "cell positions are int32");
    const auto & cells = kv.v_cells[stream];
    n = cells.size();
    return cells.pos_data();
}

oscar_tier llama_kv_oscar::view() const {  // const methods only read through it
    return { (int32_t) kv.n_seq_max, tier_sinks, tier_window, const_cast<int32_t *>(pos.data()),
             const_cast<int32_t *>(shift.data()), kv.swa_type == LLAMA_SWA_TYPE_STANDARD ? (int32_t) kv.n_swa : 0 };
}

//
// the cache's operations
//

void llama_kv_oscar::clear(bool data) {
    std::fill(pos.begin(), pos.end(), -1);
    std::fill(shift.begin(), shift.end(), 0);
    if (data) {
        for (const auto & l : layers) {
            for (ggml_tensor * t : { l.k_tier, l.v_tier }) {
                if (t && t->buffer && t->data) {
                    ggml_backend_tensor_memset(t, 0, 0, ggml_nbytes(t));
                }
            }
        }
    }
}

void llama_kv_oscar::seq_rm(int32_t seq, int32_t p0, int32_t p1) {
    if (tier_on()) {
        oscar_tier t = view();
        oscar_tier_seq_rm(&t, seq, p0, p1);
    }
}

void llama_kv_oscar::seq_cp(int32_t src, int32_t dst_seq, int32_t p0, int32_t p1) {
    if (!tier_on() || src < 0 || dst_seq < 0 || (uint32_t) src >= kv.n_seq_max || (uint32_t) dst_seq >= kv.n_seq_max) {
        return;
    }
    std::vector<int32_t> from(per_seq), to(per_seq);
    oscar_tier t = view();
    if (kv.n_stream > 1 && src != dst_seq) {  // a copy across streams replaces the destination, as the cells' does
        oscar_tier_seq_rm(&t, dst_seq, 0, -1);
    }
    const int32_t n = oscar_tier_seq_cp(&t, src, dst_seq, p0, p1, from.data(), to.data());
    copy_rows(from.data(), to.data(), n);
}

void llama_kv_oscar::seq_keep(int32_t seq) {
    if (tier_on()) {
        oscar_tier t = view();
        oscar_tier_seq_keep(&t, seq);
    }
}

void llama_kv_oscar::seq_add(int32_t seq, int32_t p0, int32_t p1, int32_t delta) {
    if (tier_on() && delta != 0) {  // moved keys stay; the K-shift re-ropes them with the cells'
        oscar_tier t = view();
        oscar_tier_seq_add(&t, seq, p0, p1, delta);
    }
}

void llama_kv_oscar::seq_div(int32_t seq, int32_t p0, int32_t p1, int32_t d) {
    if (tier_on() && d != 1) {
        oscar_tier t = view();
        oscar_tier_seq_div(&t, seq, p0, p1, d);
    }
}

void llama_kv_oscar::copy_rows(const int32_t * from, const int32_t * to, int32_t n) {
    std::vector<uint8_t> row;
    for (const auto & l : layers) {
        for (ggml_tensor * t : { l.k_tier, l.v_tier }) {
            row.resize(t->nb[1]);
            for (int32_t i = 0; i < n; ++i) {
                ggml_backend_tensor_get(t, row.data(), from[i]*t->nb[1], t->nb[1]);
                ggml_backend_tensor_set(t, row.data(), to[i]*t->nb[1],   t->nb[1]);
            }
        }
    }
}

void llama_kv_oscar::place(const llama_ubatch & ubatch) {
    if (!tier_on()) {
        return;
    }
    pos_prev = pos;  // the prefill mask attends the tier as it was before this ubatch
    std::vector<int32_t> seq, p;
    seq_pos_of(ubatch, seq, p);
    dst.resize(ubatch.n_tokens);
    oscar_tier t = view();
    oscar_tier_place(&t, ubatch.n_tokens, seq.data(), p.data(), dst.data());
    for (auto & d : dst) {
        d = d < 0 ? n_slots : d;  // the spare row takes the tokens that stay out
    }
}

void llama_kv_oscar::shift_applied() {
    std::fill(shift.begin(), shift.end(), 0);
}

llama_kv_oscar::undo::undo(llama_kv_oscar * o) : o(o) {
    if (o) {
        pos = o->pos;
        shift = o->shift;
    }
}

llama_kv_oscar::undo::~undo() {
    if (o) {
        o->pos = std::move(pos);
        o->shift = std::move(shift);
    }
}

//
// the calibration's transform (docs/calibration.md)
//

enum { PLANE_SCALE = 0, PLANE_INV = 1, PLANE_BIAS = 2, PLANE_MEAN = 3 };

// x * plane mul (+ plane add, unless add < 0), the planes broadcast over x: rows [D, H, ...], or grouped
// [D, GQA group, H, ...] (queries, attention output)
static ggml_tensor * affine(ggml_context * ctx, ggml_tensor * x, ggml_tensor * cal, int mul, int add, bool grouped) {
    const auto plane = [&](int p) {
        return grouped ? ggml_view_4d(ctx, cal, cal->ne[0], 1, cal->ne[1], 1, cal->nb[1], cal->nb[1], cal->nb[2], p*cal->nb[2])
                       : ggml_view_3d(ctx, cal, cal->ne[0], cal->ne[1], 1, cal->nb[1], cal->nb[2], p*cal->nb[2]);
    };
    x = ggml_mul(ctx, x, plane(mul));
    return add < 0 ? x : ggml_add(ctx, x, plane(add));
}

// stored rows are (x - mean) / scale; restored rows x * scale + mean
static ggml_tensor * store  (ggml_context * ctx, ggml_tensor * x, ggml_tensor * cal) { return affine(ctx, x, cal, PLANE_INV, PLANE_BIAS, false); }
static ggml_tensor * restore(ggml_context * ctx, ggml_tensor * x, ggml_tensor * cal) { return affine(ctx, x, cal, PLANE_SCALE, PLANE_MEAN, false); }

// [D*n_head, ...] or [D, n_head, ...] -> [D, n_head/n_head_kv, n_head_kv, n_tokens], affine per KV head, back
static ggml_tensor * grouped(ggml_context * ctx, ggml_tensor * x, ggml_tensor * cal, int mul, int add, int64_t n_tokens) {
    const int64_t d = cal->ne[0], n_head_kv = cal->ne[1], n_head = ggml_nelements(x)/(d*n_tokens);
    ggml_tensor * g = ggml_reshape_4d(ctx, ggml_is_contiguous(x) ? x : ggml_cont(ctx, x), d, n_head/n_head_kv, n_head_kv, n_tokens);
    return affine(ctx, g, cal, mul, add, true);
}

void llama_kv_oscar_calib_in(ggml_context * ctx, const llama_kv_cache_context * mctx, int32_t il,
                             ggml_tensor *& q, ggml_tensor *& k, ggml_tensor *& v) {
    const llama_kv_oscar * o = mctx->oscar();
    if (!o) {
        return;
    }
    if (ggml_tensor * cal = o->calib(true, il)) {  // Q carries K's scale: every score stays what it was
        const int64_t d = q->ne[0], n_head = q->ne[1], n_tokens = q->ne[2];
        q = ggml_reshape_3d(ctx, grouped(ctx, q, cal, PLANE_SCALE, -1, n_tokens), d, n_head, n_tokens);
        k = k ? store(ctx, k, cal) : k;
    }
    if (ggml_tensor * cal = o->calib(false, il); cal && v) {
        v = store(ctx, v, cal);
    }
}

ggml_tensor * llama_kv_oscar_calib_out(ggml_context * ctx, const llama_kv_cache_context * mctx, int32_t il,
                                       ggml_tensor * cur) {
    const llama_kv_oscar * o = mctx->oscar();
    ggml_tensor * cal = o ? o->calib(false, il) : nullptr;
    if (!cal) {
        return cur;
    }
    const int64_t n_tokens = cur->ne[1];
    return ggml_reshape_2d(ctx, grouped(ctx, cur, cal, PLANE_SCALE, PLANE_MEAN, n_tokens), cur->ne[0], n_tokens);
}

ggml_tensor * llama_kv_oscar::k_unstore(ggml_context * ctx, ggml_tensor * k, int32_t il) const {
    ggml_tensor * cal = calib(true, il);
    return cal ? restore(ctx, k, cal) : k;
}

ggml_tensor * llama_kv_oscar::k_store(ggml_context * ctx, ggml_tensor * k, int32_t il) const {
    ggml_tensor * cal = calib(true, il);
    return cal ? store(ctx, k, cal) : k;
}

uint32_t llama_kv_oscar_graph_nodes(const llama_model & model) {
    return 40u*model.hparams.n_layer_all;  // calibration about 20 nodes per layer, the tier about 12
}

//
// the f16 tier in the graph (docs/tier.md)
//

// One token (decode): it is written into its slot before the attention, which reads the tier in place. Several: the
// attention reads the tier as it was before this ubatch plus the ubatch's own rows, and the rows are written into
// the tier from that source, so the write follows the read.
static bool in_place(const llama_ubatch & ubatch) { return ubatch.n_tokens == 1; }

// The tier's streams of a ubatch: a unified cache has one, holding every slot; a cache of one stream per sequence
// attends the ubatch's sequences s0.. as streams, stream s holding sequence s0 + s's slots
llama_kv_oscar::streams llama_kv_oscar::streams_of(const llama_ubatch & ubatch) const {
    if (kv.n_stream == 1) {
        return { 1, 0, 0, (uint32_t) n_slots };
    }
    const uint32_t s0 = kv.seq_to_stream[ubatch.seq_id[0][0]];
    return { ubatch.n_seqs_unq, s0, s0*(uint32_t) per_seq, (uint32_t) per_seq };
}

void llama_kv_oscar_input::build(ggml_context * ctx, const llama_kv_cache_context * mctx, const llama_ubatch & ubatch,
                                 const llama_cparams & cparams) {
    const llama_kv_oscar * o = mctx->oscar();
    if (!o || !o->tier_on() || cparams.training) {
        return;
    }
    if (!cparams.flash_attn) {
        throw std::runtime_error("oscar-gguf: the f16 tier is attended by flash attention only, which is off; "
                                 "turn it on (-fa on) or the tier off (--oscar-sinks 0 --oscar-window 0)");
    }
    const auto st = o->streams_of(ubatch);
    const int64_t n_tps = ubatch.n_tokens / st.ns;
    idxs = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, ubatch.n_tokens);
    ggml_set_input(idxs);
    mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, st.slots + (in_place(ubatch) ? 0 : n_tps), n_tps, 1, st.ns);
    ggml_set_input(mask);
    ggml_set_name(mask, "attn_inp_tier_mask");
    by_layer.assign(o->layers.size(), {});
}

bool llama_kv_oscar_input::can_reuse(const llama_kv_cache_context * mctx, const llama_ubatch & ubatch) const {
    const llama_kv_oscar * o = mctx->oscar();
    if (!o || !o->tier_on() || !mask) {
        return (mask == nullptr) == (!o || !o->tier_on());
    }
    const auto st = o->streams_of(ubatch);
    const int64_t n_tps = ubatch.n_tokens / st.ns;
    return idxs->ne[0] == ubatch.n_tokens && mask->ne[0] == st.slots + (in_place(ubatch) ? 0 : n_tps) &&
           mask->ne[1] == n_tps && mask->ne[3] == st.ns;
}

void llama_kv_oscar_input::set_input(const llama_kv_cache_context * mctx, const llama_ubatch * ubatch,
                                     ggml_tensor * kq_mask) const {
    if (!mask || !mask->buffer) {
        return;
    }
    const llama_kv_oscar * o = mctx->oscar();
    GGML_ASSERT(ggml_backend_buffer_is_host(idxs->buffer) && ggml_backend_buffer_is_host(mask->buffer));
    GGML_ASSERT(ggml_backend_buffer_is_host(kq_mask->buffer) && kq_mask->type == GGML_TYPE_F16);
    GGML_ASSERT(o->dst.size() == ubatch->n_tokens);
    int64_t * d = (int64_t *) idxs->data;
    for (uint32_t i = 0; i < ubatch->n_tokens; ++i) {
        d[i] = o->dst[i];
    }

    const auto st = o->streams_of(*ubatch);
    const int32_t n_tps = ubatch->n_tokens / st.ns, nx = in_place(*ubatch) ? 0 : n_tps;
    std::vector<int32_t> seq, pos;
    seq_pos_of(*ubatch, seq, pos);
    oscar_tier src = o->view();
    if (!in_place(*ubatch)) {
        src.pos = const_cast<int32_t *>(o->pos_prev.data());
    }
    for (uint32_t s = 0; s < st.ns; ++s) {
        const int32_t * qs = seq.data() + s*n_tps, * qp = pos.data() + s*n_tps;
        // the stream's tier slots as the attention reads them, then (several tokens) the stream's own tokens
        oscar_tier_mask(&src, (int32_t) (st.slot0 + s*st.slots), (int32_t) st.slots, n_tps, qs, qp, nx, qs, qp,
                        (uint16_t *) mask->data + (size_t) s*n_tps*mask->ne[0], mask->ne[0]);
        // the main mask without the keys the tier gives, so every key is attended once
        int64_t n_cells = 0;
        const int32_t * cell_pos = o->cell_pos(st.s0 + s, n_cells);
        oscar_tier_mask_main(&src, n_tps, qs, qp, nx, qs, qp, std::min<int64_t>(kq_mask->ne[0], n_cells), cell_pos,
                             (uint16_t *) kq_mask->data + (size_t) s*n_tps*kq_mask->ne[0], kq_mask->ne[0]);
    }
}

// The tier's rows of layer il as attention reads them: [head size, n_head_kv, n, n_stream], from slot0 on
ggml_tensor * llama_kv_oscar::held(ggml_context * ctx, bool is_k, int32_t il, uint32_t slot0, uint32_t n,
                                   uint32_t n_stream) const {
    const layer & l = layers[kv.map_layer_ids.at(il)];
    ggml_tensor * t = is_k ? l.k_tier : l.v_tier;
    const int64_t d = is_k ? kv.hparams.n_embd_head_k(il) : kv.hparams.n_embd_head_v(il);
    return ggml_view_4d(ctx, t, d, kv.hparams.n_head_kv(il), n, n_stream, ggml_row_size(t->type, d), t->nb[1],
                        n*t->nb[1], slot0*t->nb[1]);
}

llama_kv_oscar_attn llama_kv_oscar_input::attn(ggml_context * ctx, ggml_cgraph * gf, const llama_kv_cache_context * mctx,
                                               const llama_ubatch & ubatch, ggml_tensor * k_cur, ggml_tensor * v_cur,
                                               int32_t il) {
    if (!mask) {
        return {};
    }
    const llama_kv_oscar * o = mctx->oscar();
    const int32_t ikv = o->kv_layer(il);
    if (!k_cur || !v_cur) {  // a layer that reuses another's K/V attends what that layer built
        llama_kv_oscar_attn a = by_layer[ikv];
        GGML_ASSERT(a.k && "oscar-gguf: a layer reuses K/V that no earlier layer of this graph wrote");
        return a;
    }
    const auto st = o->streams_of(ubatch);
    llama_kv_oscar_attn a;
    a.mask = mask;
    for (const bool is_k : { true, false }) {
        ggml_tensor * cur = is_k ? k_cur : v_cur;
        ggml_tensor * t = is_k ? o->layers[ikv].k_tier : o->layers[ikv].v_tier;
        ggml_tensor * held = o->held(ctx, is_k, il, st.slot0, st.slots, st.ns);
        ggml_tensor * src, * rows;
        if (in_place(ubatch)) {
            src = held;
            rows = ggml_reshape_2d(ctx, ggml_is_contiguous(cur) ? cur : ggml_cont(ctx, cur), t->ne[0], 1);
        } else {
            const int64_t n_tps = ubatch.n_tokens / st.ns;
            ggml_tensor * mine = ggml_reshape_4d(ctx, ggml_cast(ctx, cur, GGML_TYPE_F16), cur->ne[0], cur->ne[1], n_tps, st.ns);
            src = ggml_concat(ctx, held, mine, 2);
            // this ubatch's rows taken from src (so written after src was read), one row of all heads per token
            rows = st.ns == 1 ? ggml_view_2d(ctx, src, t->ne[0], n_tps, src->nb[2], st.slots*src->nb[2])
                              : ggml_reshape_2d(ctx, ggml_cont(ctx, ggml_view_3d(ctx, src, t->ne[0], n_tps, st.ns,
                                    src->nb[2], src->nb[3], st.slots*src->nb[2])), t->ne[0], ubatch.n_tokens);
        }
        ggml_build_forward_expand(gf, ggml_set_rows(ctx, t, rows, idxs));
        (is_k ? a.k : a.v) = src;
    }
    by_layer[ikv] = a;
    return a;
}

void llama_kv_oscar_add_tier(ggml_context * ctx, ggml_tensor * fa, const llama_kv_oscar_attn * tier) {
    if (tier && tier->k) {
        ggml_flash_attn_ext_add_tier(fa, ggml_permute(ctx, tier->k, 0, 2, 1, 3), ggml_permute(ctx, tier->v, 0, 2, 1, 3),
                                     tier->mask);
    }
}

//
// the K-shift
//

namespace {
class tier_shift_input : public llm_graph_input_i {
public:
    tier_shift_input(ggml_tensor * t, const std::vector<int32_t> & shift) : t(t), shift(shift) {}
    void set_input(const llama_ubatch *) override {
        GGML_ASSERT(ggml_backend_buffer_is_host(t->buffer));
        int32_t * data = (int32_t *) t->data;
        std::copy(shift.begin(), shift.end(), data);
        data[shift.size()] = 0;  // the spare row
    }
    ggml_tensor * t;
    const std::vector<int32_t> & shift;  // the cache's, read when the shift graph runs
};
}

void llama_kv_oscar::build_shift(llm_graph_result * res, ggml_context * ctx, ggml_cgraph * gf,
                                 const llama_cparams & cparams, ggml_tensor * k_rot) const {
    if (!tier_on()) {
        return;
    }
    const llama_hparams & hp = kv.hparams;
    ggml_tensor * t_shift = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_slots + 1);
    ggml_set_input(t_shift);
    for (size_t i = 0; i < layers.size(); ++i) {  // the tier's K moves with its positions, rotated like the cells
        const uint32_t il = kv.layers[i].il;
        if (!hp.has_rope(il)) {
            continue;
        }
        ggml_tensor * kt = layers[i].k_tier;
        ggml_tensor * view = ggml_view_3d(ctx, kt, hp.n_rot(il), hp.n_head_kv(il), n_slots + 1,
                                          ggml_row_size(kt->type, hp.n_embd_head_k(il)), kt->nb[1], 0);
        ggml_build_forward_expand(gf, kv.build_rope_shift(cparams, ctx, view, t_shift, k_rot,
            kv.model.get_rope_factors(cparams, il), kv.model.get_rope_freq_base(cparams, il),
            kv.model.get_rope_freq_scale(cparams, il), il, true));
    }
    res->add_input(std::make_unique<tier_shift_input>(t_shift, shift));
}

//
// state
//

oscar_state_hdr llama_kv_oscar::header() const {
    oscar_state_hdr h = {};
    h.magic      = OSCAR_STATE_MAGIC;
    h.version    = OSCAR_STATE_VERSION;
    h.type_k     = kv.type_k();
    h.type_v     = kv.type_v();
    h.sinks      = tier_sinks;
    h.window     = tier_window;
    h.calib_k    = use.k;
    h.calib_v    = use.v;
    h.calib_hash = calib_hash;
    return h;
}

void llama_kv_oscar::state_write_header(llama_io_write_i & io) const {
    const oscar_state_hdr h = header();
    io.write(&h, sizeof(h));
}

void llama_kv_oscar::state_read_header(llama_io_read_i & io) const {
    oscar_state_hdr saved = {};
    io.read(&saved, sizeof(saved));
    const oscar_state_hdr cur = header();
    char err[768];
    if (oscar_state_check(&saved, &cur, err, sizeof(err)) != 0) {
        throw std::runtime_error(err);
    }
}

void llama_kv_oscar::state_write_tier(llama_io_write_i & io, int32_t seq) const {
    if (!tier_on()) {
        return;
    }
    std::vector<int32_t> slots(n_slots);
    oscar_tier t = view();
    const uint32_t n = oscar_tier_state_slots(&t, seq, slots.data());
    io.write(&n, sizeof(n));
    for (uint32_t i = 0; i < n; ++i) {
        const int32_t j = slots[i], s = j/per_seq;
        io.write(&s, sizeof(s));
        io.write(&pos[j], sizeof(pos[j]));
        for (const auto & l : layers) {
            io.write_tensor(l.k_tier, j*l.k_tier->nb[1], l.k_tier->nb[1]);
            io.write_tensor(l.v_tier, j*l.v_tier->nb[1], l.v_tier->nb[1]);
        }
    }
}

void llama_kv_oscar::state_read_tier(llama_io_read_i & io, int32_t seq) {
    if (!tier_on()) {
        return;
    }
    uint32_t n = 0;
    io.read(&n, sizeof(n));
    std::vector<uint8_t> skip;
    for (uint32_t i = 0; i < n; ++i) {
        int32_t s = 0, p = 0;
        io.read(&s, sizeof(s));
        io.read(&p, sizeof(p));
        const int32_t to = seq == -1 ? s : seq;
        int32_t slot = -1;
        if (to >= 0 && (uint32_t) to < kv.n_seq_max) {
            oscar_tier t = view();
            oscar_tier_place(&t, 1, &to, &p, &slot);
        }
        for (const auto & l : layers) {
            for (ggml_tensor * tt : { l.k_tier, l.v_tier }) {
                if (slot >= 0) {
                    io.read_tensor(tt, slot*tt->nb[1], tt->nb[1]);
                } else {
                    skip.resize(tt->nb[1]);
                    io.read(skip.data(), skip.size());
                }
            }
        }
    }
}

//
// the model's calibration
//

// At model load, before the tensors: a file whose tensor data ggml could not map is refused. Reading and checking the
// calibration is native/oscar_calib_gguf.c's; a model whose calibration does not fit still loads (an f16 cache does
// not use it), and a cache of an OScaR type refuses it with `error`.
void llama_oscar_calib::load(const gguf_context * meta, const std::string & fname, const llama_hparams & hparams) {
    char why[512];
    if (oscar_gguf_check_alignment(meta, why, sizeof(why)) != 0) {  // before the tensors are mapped: not an abort
        throw std::runtime_error(std::string("oscar-gguf: ") + why);
    }
    if (hparams.vocab_only) {  // no layers were read, and no cache will be made
        return;
    }
    uint32_t n_head_kv = hparams.n_head_kv(0), dk = hparams.n_embd_head_k(0), dv = hparams.n_embd_head_v(0);
    for (uint32_t il = 1; il < hparams.n_layer_all; il++) {  // 0: differs by layer, which no calibration fits
        n_head_kv = hparams.n_head_kv(il)     == n_head_kv ? n_head_kv : 0;
        dk        = hparams.n_embd_head_k(il) == dk        ? dk        : 0;
        dv        = hparams.n_embd_head_v(il) == dv        ? dv        : 0;
    }
    oscar_calib_shape shape = { (int32_t) hparams.n_layer_all, (int32_t) n_head_kv, (int32_t) dk, (int32_t) dv, 0, 0 };
    const size_t nk = (size_t) hparams.n_layer_all*n_head_kv*dk, nv = (size_t) hparams.n_layer_all*n_head_kv*dv;
    k_mean.resize(nk); k_std.resize(nk); v_mean.resize(nv); v_std.resize(nv);
    char err[1024];
    const int rc = oscar_calib_read(meta, fname.c_str(), &shape, k_mean.data(), k_std.data(), v_mean.data(),
                                   v_std.data(), err, sizeof(err));
    present = rc != 0;
    error   = rc < 0 ? err : "";
    rot_k   = shape.rot_k;
    rot_v   = shape.rot_v;
    if (rc <= 0) {
        k_mean.clear(); k_std.clear(); v_mean.clear(); v_std.clear();
    }
    if (rc < 0) {
        LLAMA_LOG_WARN("%s: oscar-gguf: %s\n", __func__, err);
    } else if (rc > 0) {
        LLAMA_LOG_INFO("%s: oscar-gguf: calibration for OScaR caches (K rotation %d, V rotation %d)\n", __func__,
                       rot_k, rot_v);
    }
}

//
// C API (llama.h)
//

llama_oscar_cache_info llama_oscar_get_cache_info(const llama_context * ctx, int32_t i) {
    llama_oscar_cache_info r = {};
    std::vector<std::pair<llama_kv_cache *, bool>> caches;
    bool known = true;
    caches_of(llama_get_memory(ctx), caches, known);
    caches.erase(std::remove_if(caches.begin(), caches.end(), [](const auto & c) { return !c.first || !c.first->oscar; }),
                 caches.end());
    r.n_caches = (int32_t) caches.size();
    if (i >= 0 && i < r.n_caches) {
        caches[i].first->oscar->info(r);
    }
    return r;
}

void llama_kv_oscar::info(llama_oscar_cache_info & r) const {
    r.type_k      = kv.type_k();
    r.type_v      = kv.type_v();
    r.n_cells     = kv.get_size();
    r.n_layer     = (uint32_t) kv.layers.size();
    r.k_bytes     = kv.size_k_bytes();
    r.v_bytes     = kv.size_v_bytes();
    r.n_seq       = tier_on() ? (int32_t) kv.n_seq_max : 0;
    r.tier_sinks  = tier_sinks;
    r.tier_window = tier_window;
    r.tier_bytes  = tier_bytes();
    r.calib_k     = use.k;
    r.calib_v     = use.v;
    r.rot_k       = rot_size(true);
    r.rot_v       = rot_size(false);
}

int32_t llama_oscar_model_calib(const llama_model * model) {
    return model->oscar_calib.present ? (model->oscar_calib.error.empty() ? 1 : -1) : 0;
}

const char * llama_oscar_model_calib_error(const llama_model * model) {
    return model->oscar_calib.error.c_str();
}
