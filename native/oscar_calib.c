// Calibration statistics: per-channel sums of the K or V rows one cache write stores, in llama.cpp's rotated
// domain. Called from llama.cpp's graph-evaluation callback with the rows' own memory, so activations are never
// copied out. Sums are double: a K channel's mean can be many times its spread, and sumsq/n - mean^2 must survive.
#include "oscar.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

// In place: y = H x on each n-element chunk, H the orthonormal Sylvester-ordered Walsh-Hadamard matrix that
// llama.cpp's ggml_gen_hadamard builds (H[i][j] = (-1)^popcount(i & j) / sqrt(n), symmetric).
void oscar_hadamard(float * x, int64_t len, int32_t n) {
    const float norm = 1.0f / sqrtf((float) n);
    for (int64_t c = 0; c + n <= len; c += n) {
        float * v = x + c;
        for (int32_t h = 1; h < n; h *= 2) {
            for (int32_t i = 0; i < n; i += 2 * h) {
                for (int32_t j = i; j < i + h; j++) {
                    const float a = v[j], b = v[j + h];
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
            }
        }
        for (int32_t j = 0; j < n; j++) {
            v[j] *= norm;
        }
    }
}

int oscar_calib_add(double * sum, double * sumsq, const float * rows, int64_t n_rows, int64_t row_len,
                    size_t row_stride, int64_t skip, int32_t rot) {
    if (row_len <= 0 || row_len > OSCAR_CALIB_MAX_ROW || (rot != 0 && (rot < 2 || row_len % rot || (rot & (rot - 1))))) {
        return -1;
    }
    float buf[OSCAR_CALIB_MAX_ROW];
    for (int64_t r = skip < 0 ? 0 : skip; r < n_rows; r++) {
        const float * x = (const float *) ((const char *) rows + (size_t) r * row_stride);
        if (rot) {
            memcpy(buf, x, (size_t) row_len * sizeof(float));
            oscar_hadamard(buf, row_len, rot);
            x = buf;
        }
        for (int64_t i = 0; i < row_len; i++) {
            const double v = x[i];
            sum[i] += v;
            sumsq[i] += v * v;
        }
    }
    return 0;
}

void oscar_calib_affine(const float * mean, const float * std, int64_t n, int64_t group, int keep_mean, float * out) {
    float * scale = out, * inv = out + n, * bias = out + 2*n, * mu = out + 3*n;
    for (int64_t h = 0; h + group <= n; h += group) {
        double ss = 0.0;
        int ok = 1;
        for (int64_t i = h; i < h + group; i++) {
            const double si = std[i];
            ok &= isfinite(si) && isfinite((double) mean[i]);
            ss += si * si;
        }
        const double rms = ok ? sqrt(ss / (double) group) : 0.0;
        for (int64_t i = h; i < h + group; i++) {
            // the floor keeps a dead channel from a division by zero; 1e-6 of the head's spread is far below
            // anything the quantizer resolves
            const double s = rms > 0.0 ? fmax((double) std[i], 1e-6 * rms) : 1.0;
            const double m = rms > 0.0 && keep_mean ? (double) mean[i] : 0.0;
            scale[i] = (float) s;
            inv[i]   = (float) (1.0 / s);
            bias[i]  = (float) (-m / s);
            mu[i]    = (float) m;
        }
    }
}

void oscar_calib_bounds(double * out) {
    out[0] = OSCAR_CALIB_RMS_MIN;
    out[1] = OSCAR_CALIB_RMS_MAX;
    out[2] = OSCAR_CALIB_SPREAD;
    out[3] = OSCAR_CALIB_MEAN_MAX;
}

int oscar_calib_check(const float * mean, const float * std, int32_t n_layer, int32_t n_head, int32_t dim,
                      const char * mean_key, const char * std_key, char * err, size_t err_len) {
    for (int64_t h = 0; h < (int64_t) n_layer * n_head; h++) {
        const int64_t i0 = h * dim, layer = h / n_head, head = h % n_head;
        double ss = 0.0;
        for (int64_t i = i0; i < i0 + dim; i++) {
            const double m = mean[i], s = std[i];
            const char * key = !isfinite(m) ? mean_key : std_key;
            const char * bad = !isfinite(m) || !isfinite(s) ? "not finite" : !(s > 0.0) ? "not positive" : NULL;
            if (bad) {
                snprintf(err, err_len, "%s[%lld] (layer %lld, KV head %lld, channel %lld) = %g: %s", key,
                         (long long) i, (long long) layer, (long long) head, (long long) (i - i0),
                         key == mean_key ? m : s, bad);
                return -1;
            }
            ss += s * s;
        }
        const double r = sqrt(ss / (double) dim);
        if (r < OSCAR_CALIB_RMS_MIN || r > OSCAR_CALIB_RMS_MAX) {
            snprintf(err, err_len, "%s[%lld..%lld] (layer %lld, KV head %lld): the head's std RMS %g is outside "
                     "[%g, %g]", std_key, (long long) i0, (long long) (i0 + dim - 1), (long long) layer,
                     (long long) head, r, OSCAR_CALIB_RMS_MIN, OSCAR_CALIB_RMS_MAX);
            return -1;
        }
        for (int64_t i = i0; i < i0 + dim; i++) {
            const double m = mean[i], s = std[i];
            const int far = s < r / OSCAR_CALIB_SPREAD || s > r * OSCAR_CALIB_SPREAD;
            if (far || fabs(m) > OSCAR_CALIB_MEAN_MAX * r) {
                snprintf(err, err_len, "%s[%lld] (layer %lld, KV head %lld, channel %lld) = %g: %s %gx the head's std "
                         "RMS %g", far ? std_key : mean_key, (long long) i, (long long) layer, (long long) head,
                         (long long) (i - i0), far ? s : m, far ? "the std is not within" : "the |mean| is over",
                         far ? OSCAR_CALIB_SPREAD : OSCAR_CALIB_MEAN_MAX, r);
                return -1;
            }
        }
    }
    if (err_len) {
        err[0] = '\0';
    }
    return 0;
}
