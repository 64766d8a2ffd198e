// What an OScaR cache of llama.cpp gets: the f16 tier, the calibration, and whether a saved state fits it.
// Pure decisions over plain numbers, so llama.cpp (native/llama/llama-kv-oscar.cpp) and the tests (cffi) run the
// same code.
#include "oscar.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void put(char * err, size_t len, const char * fmt, ...) {
    if (!err || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

static const char * TIER_OFF = "; run without the f16 tier (oscar_sinks = oscar_window = 0, --oscar-sinks 0 --oscar-window 0)";

int oscar_tier_plan(const oscar_tier_layout * l, char * err, size_t err_len) {
    put(err, err_len, "%s", "");
    if (!l->oscar_k && !l->oscar_v) {
        return 0;
    }
    if (l->sinks < 0 || l->window < 0) {
        put(err, err_len, "oscar-gguf: f16 tier sinks and window must be >= 0, got %d and %d", l->sinks, l->window);
        return -1;
    }
    if (l->sinks == 0 && l->window == 0) {
        return 0;
    }
    const int64_t slots = ((int64_t) l->sinks + l->window) * (l->n_seq_max > 0 ? l->n_seq_max : 1);
    const char * why = NULL;
    if (slots >= ((int64_t) 1 << 30)) {
        why = "more tier slots than a cache can index";
    } else if (!l->flash_attn) {
        why = "it is attended by flash attention only, which is off";
    } else if (l->mla) {
        why = "this model's K-only (MLA) cache has no tier yet";
    } else if (l->swa_type == 2 || l->swa_type == 3) {
        why = "chunked and symmetric sliding-window layers have no tier yet";
    } else if (l->shares_cells) {
        why = "a cache that shares another context's cells has no tier yet";
    } else if (!l->wired) {
        why = "this model's cache kind has no tier yet";
    }
    if (why) {
        put(err, err_len, "oscar-gguf: an f16 tier of %d sinks + %d window tokens was asked for, but %s%s",
            l->sinks, l->window, why, TIER_OFF);
        return -1;
    }
    return 1;
}

int oscar_calib_plan(const oscar_calib_layout * l, oscar_calib_use * out, char * err, size_t err_len) {
    out->k = out->v = 0;
    put(err, err_len, "%s", "");
    if (!l->oscar_k && !l->oscar_v) {
        return 0;
    }
    if (!l->present) {
        put(err, err_len, "oscar-gguf: the model has no calibration, the OScaR cache runs uncalibrated "
            "(oscar-gguf calibrate adds one)");
        return 0;
    }
    if (!l->enabled) {
        put(err, err_len, "oscar-gguf: the model's calibration is off (oscar_calib = 0)");
        return 0;
    }
    if (l->mla) {
        put(err, err_len, "oscar-gguf: calibration not applied: MLA attention (not yet)");
        return 0;
    }
    // a cache type that does not use the calibration keeps the rotation it has: only the used side must match
    const int rk = l->oscar_k ? l->rot_k : l->cal_rot_k, rv = l->oscar_v ? l->rot_v : l->cal_rot_v;
    if (rk != l->cal_rot_k || rv != l->cal_rot_v) {
        put(err, err_len, "oscar-gguf: the calibration was measured after Hadamard rotations of %d (K) and %d (V), "
            "this cache rotates by %d and %d (0: off; LLAMA_ATTN_ROT_DISABLE?)", l->cal_rot_k, l->cal_rot_v, rk, rv);
        return -1;
    }
    out->k = l->oscar_k && !l->partial_rope;
    out->v = l->oscar_v;
    if (l->oscar_k && l->partial_rope) {
        put(err, err_len, "oscar-gguf: calibration of K not applied: RoPE on part of the head (not yet)");
    }
    return out->k || out->v;
}

int oscar_calib_keep_mean(int is_k, int attn_sinks, int soft_cap) {
    return !attn_sinks && !(is_k && soft_cap);
}

uint64_t oscar_fnv1a(uint64_t h, const void * data, size_t n) {
    const unsigned char * p = (const unsigned char *) data;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

int oscar_state_check(const oscar_state_hdr * saved, const oscar_state_hdr * cur, char * err, size_t err_len) {
    put(err, err_len, "%s", "");
    if (saved->magic != OSCAR_STATE_MAGIC) {
        put(err, err_len, "oscar-gguf: the state was not saved by this oscar-gguf llama.cpp (no OScaR cache header)");
        return -1;
    }
    if (saved->version != OSCAR_STATE_VERSION) {  // 1, 2: oscar2 / oscar3 blocks held scalar codes
        put(err, err_len, "oscar-gguf: the state was saved by another version of oscar-gguf (state format %u, this "
            "build reads %u: its oscar2 or oscar3 blocks may hold another code); nothing was loaded", saved->version, OSCAR_STATE_VERSION);
        return -1;
    }
    char buf[512];
    size_t used = 0;
    buf[0] = '\0';
#define DIFF(what, a, b) do { if ((a) != (b) && used < sizeof(buf)) { \
        used += (size_t) snprintf(buf + used, sizeof(buf) - used, "%s%s: saved %d, this cache %d", \
                                  used ? "; " : "", what, (int) (a), (int) (b)); } } while (0)
    DIFF("K type", saved->type_k, cur->type_k);
    DIFF("V type", saved->type_v, cur->type_v);
    DIFF("tier sinks", saved->sinks, cur->sinks);
    DIFF("tier window", saved->window, cur->window);
    DIFF("calibrated K", saved->calib_k, cur->calib_k);
    DIFF("calibrated V", saved->calib_v, cur->calib_v);
#undef DIFF
    if (used == 0 && saved->calib_hash != cur->calib_hash) {
        used = (size_t) snprintf(buf, sizeof(buf), "calibration: the state was saved with another one");
    }
    if (used) {
        put(err, err_len, "oscar-gguf: the state was saved with other KV cache settings (%s); nothing was loaded", buf);
        return -1;
    }
    return 0;
}
