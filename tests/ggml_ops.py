"""Just enough of ggml's C API (from the patched build installed with llama_cpp) to run one op on the CPU.

Tests build a graph of real ggml tensors, fill them from NumPy and compare the result with a NumPy model.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import cffi
import numpy as np

CDEF = """
struct ggml_init_params { size_t mem_size; void * mem_buffer; bool no_alloc; };
struct ggml_context * ggml_init(struct ggml_init_params params);
void   ggml_free(struct ggml_context * ctx);
struct ggml_tensor * ggml_new_tensor_4d(struct ggml_context * ctx, int type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
struct ggml_tensor * ggml_flash_attn_ext(struct ggml_context * ctx, struct ggml_tensor * q, struct ggml_tensor * k,
        struct ggml_tensor * v, struct ggml_tensor * mask, float scale, float max_bias, float logit_softcap);
void   ggml_flash_attn_ext_add_sinks(struct ggml_tensor * a, struct ggml_tensor * sinks);
void   ggml_flash_attn_ext_add_tier(struct ggml_tensor * a, struct ggml_tensor * k2, struct ggml_tensor * v2, struct ggml_tensor * mask2);
struct ggml_cgraph * ggml_new_graph(struct ggml_context * ctx);
void   ggml_build_forward_expand(struct ggml_cgraph * cgraph, struct ggml_tensor * tensor);
int    ggml_graph_compute_with_ctx(struct ggml_context * ctx, struct ggml_cgraph * cgraph, int n_threads);
void * ggml_get_data(const struct ggml_tensor * tensor);
size_t ggml_nbytes(const struct ggml_tensor * tensor);
"""
F32, F16 = 0, 1


@lru_cache(maxsize=None)
def lib():
    import llama_cpp  # loads the patched libggml* it ships, or those in LLAMA_CPP_LIB_PATH (another build)

    libdir = Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).parent / "lib")
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    base = ffi.dlopen(str(libdir / "libggml-base.so"))
    cpu = ffi.dlopen(str(libdir / "libggml-cpu.so"))
    return ffi, base, cpu


class Graph:
    """A ggml context whose tensors are filled from NumPy arrays; compute() runs the graph on the CPU."""

    def __init__(self, mem: int = 256 << 20):
        self.ffi, self.base, self.cpu = lib()
        self.ctx = self.base.ggml_init({"mem_size": mem, "mem_buffer": self.ffi.NULL, "no_alloc": False})

    def tensor(self, type_: int, data: np.ndarray | bytes, ne: tuple[int, ...]):
        """New 4-D tensor of `ne` (ggml order, fastest first) holding `data`'s bytes."""
        ne = tuple(ne) + (1,) * (4 - len(ne))
        t = self.base.ggml_new_tensor_4d(self.ctx, type_, *ne)
        raw = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else data
        n = self.base.ggml_nbytes(t)
        if len(raw) != n:
            raise ValueError(f"{len(raw)} bytes for a tensor of {n}")
        self.ffi.memmove(self.base.ggml_get_data(t), raw, n)
        return t

    def compute(self, out, threads: int = 2) -> np.ndarray:
        gf = self.base.ggml_new_graph(self.ctx)
        self.base.ggml_build_forward_expand(gf, out)
        if self.cpu.ggml_graph_compute_with_ctx(self.ctx, gf, threads) != 0:
            raise RuntimeError("ggml_graph_compute_with_ctx failed")
        n = self.base.ggml_nbytes(out)
        return np.frombuffer(self.ffi.buffer(self.base.ggml_get_data(out), n), dtype=np.float32).copy()

    def close(self) -> None:
        self.base.ggml_free(self.ctx)

    def __enter__(self) -> "Graph":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
