// Attention of one query row over several K/V sources with one softmax: the CPU side of the two-tier cache
// (main OScaR cache + f16 tier of protected tokens). Compiled into ggml-cpu (patches/0005 calls it for
// flash attention with a tier) and into the Python library (tests check it against NumPy).
#include <math.h>

#include "oscar.h"
#include "oscar_impl.h"

void oscar_attn_row(const oscar_attn_src * src, int nsrc, int64_t dv, float scale, float softcap, float slope,
                    const float * sink, float * out, float * vrow) {
    // Online softmax (running max M, running sum S), accumulated in float; rows masked to -inf are skipped.
    float M = -INFINITY, S = 0.0f;
    memset(out, 0, (size_t) dv * sizeof(float));
    const float kq_scale = softcap != 0.0f ? scale / softcap : scale;
    for (int t = 0; t < nsrc; t++) {
        const oscar_attn_src * a = &src[t];
        for (int64_t i = 0; i < a->n; i++) {
            const float mv = a->mask ? slope * oscar_half_to_float(a->mask[i]) : 0.0f;
            if (mv == -INFINITY) {
                continue;
            }
            float s;
            a->kq((int) a->dk, &s, 0, a->k + i * a->nbk, 0, a->q, 0, 1);
            s *= kq_scale;
            if (softcap != 0.0f) {
                s = softcap * tanhf(s);
            }
            s += mv;
            const char * v = a->v + i * a->nbv;
            const float * vf = (const float *) v;
            if (a->v_to_float) {
                a->v_to_float(v, vrow, dv);
                vf = vrow;
            }
            float ms = 1.0f, vs = 1.0f;  // rescale of what is accumulated, weight of this row
            if (s > M) {
                ms = expf(M - s);  // 0 for the first row
                M = s;
                for (int64_t d = 0; d < dv; d++) out[d] *= ms;
            } else {
                vs = expf(s - M);
            }
            for (int64_t d = 0; d < dv; d++) out[d] += vs * vf[d];
            S = S * ms + vs;
        }
    }
    if (sink) {  // an extra logit with a zero value vector
        if (*sink > M) {
            const float ms = expf(M - *sink);
            for (int64_t d = 0; d < dv; d++) out[d] *= ms;
            S = S * ms + 1.0f;
        } else {
            S += expf(*sink - M);
        }
    }
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    for (int64_t d = 0; d < dv; d++) out[d] *= inv;
}
