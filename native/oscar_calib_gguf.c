// A model's calibration as llama.cpp reads it from the GGUF metadata (keys and layout: docs/calibration.md;
// oscar_gguf/calibmeta.py writes them). Compiled into libllama only: it reads through ggml's gguf API.
#include "oscar.h"

#include "gguf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OSCAR_CALIB_VERSION 1

typedef struct {
    char * s;
    size_t len, used, opening;  // opening: where the list of what is wrong starts
} msg;

static void say(msg * m, const char * fmt, ...) {
    if (m->used >= m->len) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(m->s + m->used, m->len - m->used, fmt, ap);
    va_end(ap);
    m->used += n > 0 ? (size_t) n : 0;
}

// Starts the message over with a heading; what follows lists what is wrong after it.
static void begin(msg * m, const char * fmt, const char * arg) {
    m->used = 0;
    m->s[0] = '\0';
    say(m, fmt, arg);
    m->opening = m->used;
}

static int64_t key_of(const struct gguf_context * g, const char * key, enum gguf_type type, msg * m) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != type) {
        say(m, "%s%s", m->used > m->opening ? ", " : "", key);
        return -1;
    }
    return id;
}

static int read_u32(const struct gguf_context * g, const char * key, msg * m, int32_t * out) {
    const int64_t id = key_of(g, key, GGUF_TYPE_UINT32, m);
    *out = id < 0 ? -1 : (int32_t) gguf_get_val_u32(g, id);
    return id >= 0;
}

static int read_array(const struct gguf_context * g, const char * key, size_t n, float * out, msg * m) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != GGUF_TYPE_FLOAT32 ||
            gguf_get_arr_n(g, id) != n) {
        say(m, "%s%s (%zu float32 values)", m->used > m->opening ? ", " : "", key, n);
        return 0;
    }
    memcpy(out, gguf_get_arr_data(g, id), n * sizeof(float));
    return 1;
}

static int fingerprint_of(const struct gguf_context * g, const char * path, char * out) {
    const int64_t n = gguf_get_n_tensors(g);
    oscar_fp_tensor * t = (oscar_fp_tensor *) calloc((size_t) (n > 0 ? n : 1), sizeof(oscar_fp_tensor));
    if (!t) {
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t * ne = gguf_get_tensor_ne(g, i);
        t[i].name = gguf_get_tensor_name(g, i);
        t[i].type = (uint32_t) gguf_get_tensor_type(g, i);
        for (int d = 0; d < 4; d++) {
            t[i].ne[d] = (uint64_t) ne[d];
        }
        t[i].offset = gguf_get_tensor_offset(g, i);
        t[i].nbytes = gguf_get_tensor_size(g, i);
    }
    const int rc = oscar_fingerprint(path, gguf_get_data_offset(g), t, n, out);
    free(t);
    return rc;
}

int oscar_calib_read(const struct gguf_context * g, const char * path, oscar_calib_shape * shape,
                     float * k_mean, float * k_std, float * v_mean, float * v_std, char * err, size_t err_len) {
    msg m = { err, err_len, 0, 0 };
    err[0] = '\0';
    const int64_t vid = gguf_find_key(g, "oscar.version");
    if (vid < 0) {
        return 0;
    }
    if (gguf_get_kv_type(g, vid) != GGUF_TYPE_UINT32 || gguf_get_val_u32(g, vid) != OSCAR_CALIB_VERSION) {
        say(&m, "calibration format version is not %d: calibrate the model again with this oscar-gguf",
            OSCAR_CALIB_VERSION);
        return -1;
    }
    int32_t n_layer, n_head_kv, dk, dv;
    begin(&m, "calibration metadata lacks or mistypes %s", "");
    const int64_t fid = key_of(g, "oscar.fingerprint", GGUF_TYPE_STRING, &m);
    int ok = fid >= 0;
    ok &= read_u32(g, "oscar.block_count", &m, &n_layer);
    ok &= read_u32(g, "oscar.head_count_kv", &m, &n_head_kv);
    ok &= read_u32(g, "oscar.key_length", &m, &dk);
    ok &= read_u32(g, "oscar.value_length", &m, &dv);
    ok &= read_u32(g, "oscar.rot_k", &m, &shape->rot_k);
    ok &= read_u32(g, "oscar.rot_v", &m, &shape->rot_v);
    if (!ok) {
        return -1;
    }
    begin(&m, "calibration does not match the model %s (", path);
    const struct { const char * what; int32_t have, want; } dims[] = {
        { "layers", n_layer, shape->n_layer }, { "KV heads", n_head_kv, shape->n_head_kv },
        { "K head size", dk, shape->head_dim_k }, { "V head size", dv, shape->head_dim_v },
    };
    for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++) {
        if (dims[i].have != dims[i].want) {
            say(&m, "%s%s: calibration %d, model %d", m.used > m.opening ? "; " : "", dims[i].what,
                dims[i].have, dims[i].want);
        }
    }
    if (m.used == m.opening) {  // the shapes agree: only then is the fingerprint worth reading
        char fp[OSCAR_FP_LEN];
        const int rc = fingerprint_of(g, path, fp);
        const char * have = gguf_get_val_str(g, fid);
        if (rc != 0) {
            say(&m, "cannot read its tensors for the fingerprint");
        } else if (strcmp(have, fp) != 0) {
            say(&m, "tensor fingerprint: calibration %s, model %s", have, fp);
        }
    }
    if (m.used > m.opening) {
        say(&m, ")");
        return -1;
    }
    begin(&m, "calibration metadata lacks, mistypes or mis-sizes %s", "");
    const size_t nk = (size_t) n_layer * n_head_kv * dk, nv = (size_t) n_layer * n_head_kv * dv;
    ok = read_array(g, "oscar.k_mean", nk, k_mean, &m);
    ok &= read_array(g, "oscar.k_std", nk, k_std, &m);
    ok &= read_array(g, "oscar.v_mean", nv, v_mean, &m);
    ok &= read_array(g, "oscar.v_std", nv, v_std, &m);
    if (!ok) {
        return -1;
    }
    char why[384];
    if (oscar_calib_check(k_mean, k_std, n_layer, n_head_kv, dk, "oscar.k_mean", "oscar.k_std", why, sizeof(why)) ||
        oscar_calib_check(v_mean, v_std, n_layer, n_head_kv, dv, "oscar.v_mean", "oscar.v_std", why, sizeof(why))) {
        begin(&m, "calibration values are unusable: %s", why);
        return -1;
    }
    err[0] = '\0';
    return 1;
}

int oscar_gguf_check_alignment(const struct gguf_context * g, char * err, size_t err_len) {
    const size_t data = gguf_get_data_offset(g);
    for (int64_t i = 0; i < gguf_get_n_tensors(g); i++) {
        const size_t off = data + gguf_get_tensor_offset(g, i);
        if (off % OSCAR_TENSOR_ALIGNMENT) {
            snprintf(err, err_len, "tensor %s starts at file offset %zu, not a multiple of %d (general.alignment %zu): "
                     "ggml cannot map it; rewrite the file with alignment 32", gguf_get_tensor_name(g, i), off,
                     OSCAR_TENSOR_ALIGNMENT, gguf_get_alignment(g));
            return -1;
        }
    }
    return 0;
}
