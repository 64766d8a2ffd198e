// Model fingerprint: names the tensors a calibration was measured on, so that llama.cpp (at context creation) and
// Python (at calibration and read-back) can tell whether it belongs to the model it sits in.
// FNV-1a 64 over each tensor's name, ggml type, 4 dims (gguf's API pads with 1) and byte size, and OSCAR_FP_PIECES pieces of its data spread
// evenly from its first to its last byte (all of it when smaller), in the order given (the file's). Sampled, not a
// full hash: hashing a 4 GB model at every context creation would take seconds, and any re-quantization or
// fine-tune changes every piece.
#define _POSIX_C_SOURCE 200809L  // fseeko/ftello: 64-bit offsets for models over 2 GB
#define _FILE_OFFSET_BITS 64
#include "oscar.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/types.h>

#ifdef _WIN32
#define fseeko _fseeki64
#define ftello _ftelli64
#define off_t  __int64
#endif

#define OSCAR_FP_PIECES 64
#define OSCAR_FP_PIECE  256

static uint64_t fnv(uint64_t h, const void * p, size_t n) {
    const unsigned char * b = (const unsigned char *) p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v) {  // little-endian, whatever the host
    unsigned char b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char) (v >> 8*i);
    }
    return fnv(h, b, 8);
}

static int read_at(FILE * f, uint64_t at, void * buf, size_t n) {
    return fseeko(f, (off_t) at, SEEK_SET) == 0 && fread(buf, 1, n, f) == n ? 0 : -1;
}

int oscar_fingerprint(const char * path, uint64_t data_start, const oscar_fp_tensor * t, int64_t n, char * out) {
    FILE * f = fopen(path, "rb");
    if (!f || fseeko(f, 0, SEEK_END) != 0) {
        if (f) {
            fclose(f);
        }
        return -1;
    }
    setvbuf(f, NULL, _IONBF, 0);  // pieces are far apart: a read buffer would only copy more
    const uint64_t size = (uint64_t) ftello(f);
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned char buf[OSCAR_FP_PIECES * OSCAR_FP_PIECE];
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; i++) {
        const oscar_fp_tensor * x = &t[i];
        const uint64_t start = data_start + x->offset;
        if (start > size || x->nbytes > size - start) {
            rc = -2;
            break;
        }
        const char * c = x->name;
        while (*c) {
            c++;
        }
        h = fnv(h, x->name, (size_t) (c - x->name) + 1);
        h = fnv_u64(h, x->type);
        for (int d = 0; d < 4; d++) {
            h = fnv_u64(h, x->ne[d]);
        }
        h = fnv_u64(h, x->nbytes);
        if (x->nbytes <= sizeof(buf)) {
            rc = read_at(f, start, buf, (size_t) x->nbytes);
            h = fnv(h, buf, (size_t) x->nbytes);
            continue;
        }
        for (int p = 0; p < OSCAR_FP_PIECES && rc == 0; p++) {
            const uint64_t at = start + (x->nbytes - OSCAR_FP_PIECE) / (OSCAR_FP_PIECES - 1) * (uint64_t) p;
            rc = read_at(f, at, buf, OSCAR_FP_PIECE);
            h = fnv(h, buf, OSCAR_FP_PIECE);
        }
    }
    fclose(f);
    if (rc == 0) {
        snprintf(out, OSCAR_FP_LEN, "oscar-fp1:%016" PRIx64, h);
    }
    return rc;
}
