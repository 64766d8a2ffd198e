// Bookkeeping of the f16 tier of protected tokens (attention sinks and a window of recent tokens).
// Each sequence owns S + W slots of the tier; a slot remembers the position it holds (-1: empty). Which slot
// a token gets does not depend on its position, so a position shift only rewrites the remembered positions.
// llama.cpp's cache (patches/) keeps one oscar_tier per cache and calls these to place tokens, follow the
// sequence operations and build the two attention masks.
#include <stdlib.h>

#include "oscar.h"

static int32_t * seq_slots(const oscar_tier * t, int32_t seq) { return t->pos + (int64_t) seq * (t->sinks + t->window); }

int32_t oscar_tier_find(const oscar_tier * t, int32_t seq, int32_t pos) {
    const int32_t n = t->sinks + t->window, * p = seq_slots(t, seq);
    for (int32_t i = 0; i < n; i++) {
        if (p[i] == pos) return (int32_t) (seq * n + i);
    }
    return -1;
}

// Slot for (seq, pos): the one holding pos, else a free one, else the oldest window entry if pos is newer
// (or pos is a sink); -1 when the token stays out (older than the whole window).
static int32_t pick_slot(const oscar_tier * t, int32_t seq, int32_t pos) {
    const int32_t n = t->sinks + t->window, * p = seq_slots(t, seq);
    int32_t free_slot = -1, oldest = -1;
    for (int32_t i = 0; i < n; i++) {
        if (p[i] == pos) return i;
        if (p[i] < 0) {
            if (free_slot < 0) free_slot = i;
        } else if (p[i] >= t->sinks && (oldest < 0 || p[i] < p[oldest])) {
            oldest = i;
        }
    }
    if (pos >= t->sinks && t->window == 0) return -1;
    if (free_slot >= 0) return free_slot;
    if (oldest >= 0 && (pos < t->sinks || pos > p[oldest])) return oldest;
    return -1;
}

int32_t oscar_tier_place(oscar_tier * t, int32_t n, const int32_t * seq, const int32_t * pos, int32_t * slot) {
    const int32_t per_seq = t->sinks + t->window;
    int32_t placed = 0;
    for (int32_t i = 0; i < n; i++) {
        slot[i] = -1;
        if (per_seq == 0 || seq[i] < 0 || seq[i] >= t->n_seq || pos[i] < 0) continue;
        const int32_t j = pick_slot(t, seq[i], pos[i]);
        if (j < 0) continue;
        const int32_t s = seq[i] * per_seq + j;
        for (int32_t e = 0; e < i; e++) {  // an earlier token of this batch loses its slot: it is not written
            if (slot[e] == s) { slot[e] = -1; placed--; }
        }
        t->pos[s]   = pos[i];
        t->shift[s] = 0;
        slot[i] = s;
        placed++;
    }
    return placed;
}

static int in_range(int32_t pos, int32_t p0, int32_t p1) { return pos >= 0 && pos >= p0 && (p1 < 0 || pos < p1); }

void oscar_tier_seq_rm(oscar_tier * t, int32_t seq, int32_t p0, int32_t p1) {
    const int32_t per_seq = t->sinks + t->window;
    for (int32_t s = 0; s < t->n_seq; s++) {
        if (seq >= 0 && s != seq) continue;
        for (int32_t i = s * per_seq; i < (s + 1) * per_seq; i++) {
            if (in_range(t->pos[i], p0, p1)) t->pos[i] = -1;
        }
    }
}

void oscar_tier_seq_keep(oscar_tier * t, int32_t seq) {
    for (int32_t s = 0; s < t->n_seq; s++) {
        if (s != seq) oscar_tier_seq_rm(t, s, 0, -1);
    }
}

int32_t oscar_tier_seq_cp(oscar_tier * t, int32_t src, int32_t dst, int32_t p0, int32_t p1, int32_t * from, int32_t * to) {
    const int32_t per_seq = t->sinks + t->window;
    int32_t n = 0;
    if (src == dst) return 0;
    for (int32_t i = src * per_seq; i < (src + 1) * per_seq; i++) {
        const int32_t pos = t->pos[i];
        if (!in_range(pos, p0, p1)) continue;
        const int32_t j = pick_slot(t, dst, pos);
        if (j < 0) continue;
        const int32_t d = dst * per_seq + j;
        for (int32_t e = 0; e < n; e++) {  // a copy made earlier in this call was evicted again
            if (to[e] == d) { from[e] = from[n - 1]; to[e] = to[n - 1]; n--; break; }
        }
        t->pos[d] = pos;
        t->shift[d] = t->shift[i];
        from[n] = i;
        to[n] = d;
        n++;
    }
    return n;
}

void oscar_tier_seq_add(oscar_tier * t, int32_t seq, int32_t p0, int32_t p1, int32_t delta) {
    const int32_t per_seq = t->sinks + t->window;
    for (int32_t i = seq * per_seq; i < (seq + 1) * per_seq; i++) {
        if (!in_range(t->pos[i], p0, p1)) continue;
        t->pos[i] += delta;
        t->shift[i] += delta;
        if (t->pos[i] < 0) t->pos[i] = -1;  // shifted out of the sequence, as llama.cpp drops such cells
    }
}

void oscar_tier_seq_div(oscar_tier * t, int32_t seq, int32_t p0, int32_t p1, int32_t d) {
    const int32_t per_seq = t->sinks + t->window;
    for (int32_t i = seq * per_seq; i < (seq + 1) * per_seq; i++) {
        if (!in_range(t->pos[i], p0, p1)) continue;
        const int32_t np = t->pos[i] / d;
        t->shift[i] += np - t->pos[i];
        t->pos[i] = np;
        for (int32_t j = seq * per_seq; j < i; j++) {  // two tokens merged into one position: keep one
            if (t->pos[j] == np) { t->pos[i] = -1; break; }
        }
    }
}

void oscar_tier_mask(const oscar_tier * t, int32_t slot0, int32_t nslots, int32_t nq, const int32_t * q_seq,
                     const int32_t * q_pos, int32_t nx, const int32_t * x_seq, const int32_t * x_pos,
                     uint16_t * mask, int64_t stride) {
    const int32_t per_seq = t->sinks + t->window;
    const uint16_t zero = 0x0000, ninf = 0xfc00;  // fp16 0 and -inf
    for (int32_t i = 0; i < nq; i++) {
        uint16_t * row = mask + (int64_t) i * stride;
        for (int32_t j = 0; j < nslots; j++) {
            const int32_t s = slot0 + j, kp = t->pos[s];
            row[j] = kp >= 0 && s / per_seq == q_seq[i] && oscar_tier_covers(t, kp, q_pos[i]) ? zero : ninf;
        }
        for (int32_t j = 0; j < nx; j++) {
            row[nslots + j] = x_seq[j] == q_seq[i] && oscar_tier_covers(t, x_pos[j], q_pos[i]) ? zero : ninf;
        }
    }
}

static int64_t seq_pos_key(int32_t seq, int32_t pos) { return ((int64_t) seq << 32) | (uint32_t) pos; }

static int cmp_key(const void * a, const void * b) {
    const int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

void oscar_tier_mask_main(const oscar_tier * prev, int32_t nq, const int32_t * q_seq, const int32_t * q_pos,
                          int32_t nx, const int32_t * x_seq, const int32_t * x_pos,
                          int64_t n_kv, const int32_t * cell_pos, uint16_t * mask, int64_t stride) {
    const int32_t per_seq = prev->sinks + prev->window, nslots = prev->n_seq * per_seq;
    const uint16_t ninf = 0xfc00;  // fp16 -inf
    // (sequence, position) of every key in the tier source, sorted for lookups
    int64_t * held = (int64_t *) malloc(sizeof(int64_t) * (size_t) (nslots + nx > 0 ? nslots + nx : 1));
    int32_t nheld = 0;
    if (!held) abort();  // a mask that double-counts keys would be silently wrong
    for (int32_t s = 0; s < nslots; s++) {
        if (prev->pos[s] >= 0) held[nheld++] = seq_pos_key(s / per_seq, prev->pos[s]);
    }
    for (int32_t i = 0; i < nx; i++) held[nheld++] = seq_pos_key(x_seq[i], x_pos[i]);
    qsort(held, (size_t) nheld, sizeof(int64_t), cmp_key);
    for (int32_t i = 0; i < nq; i++) {
        uint16_t * row = mask + (int64_t) i * stride;
        for (int64_t j = 0; j < n_kv; j++) {
            const int32_t kp = cell_pos[j];
            if (row[j] == ninf || kp < 0 || !oscar_tier_covers(prev, kp, q_pos[i])) continue;
            const int64_t key = seq_pos_key(q_seq[i], kp);
            if (bsearch(&key, held, (size_t) nheld, sizeof(int64_t), cmp_key)) row[j] = ninf;
        }
    }
    free(held);
}

int32_t oscar_tier_state_slots(const oscar_tier * t, int32_t seq, int32_t * out) {
    const int32_t per_seq = t->sinks + t->window;
    int32_t n = 0;
    for (int32_t s = 0; s < t->n_seq * per_seq; s++) {
        if (t->pos[s] >= 0 && (seq < 0 || s / per_seq == seq)) out[n++] = s;
    }
    return n;
}
