"""Watch llama.cpp's KV-cache writes through its graph-evaluation callback (llama_context_params.cb_eval).

Every cache write is a SET_ROWS node into the tensor named cache_k_l<il> / cache_v_l<il>; its first source holds
the float32 rows the cache stores (after RoPE, and after llama.cpp's Hadamard rotation when the cache type is
quantized). The tap hands each write's data pointer and shape to a sink; nothing is copied into Python.
"""
from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Callable

# Mirror of struct ggml_tensor (ggml/include/ggml.h of the pinned tree: GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64,
# GGML_MAX_SRC 10, GGML_MAX_NAME 64). The tap checks it against libggml's own accessors before trusting it.
class GGMLTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4), ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16), ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p), ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64), ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


GGML_TYPE_F32 = 0
_CACHE_NAME = re.compile(rb"cache_(?:\w+_)?([kv])_l(\d+)(?: \(\w+\))*$")

# sink(kind, layer, data pointer, n_rows, row_len, row_stride_bytes): kind "k" or "v"
Sink = Callable[[str, int, int, int, int, int], None]


class TapError(RuntimeError):
    pass


def _ggml_base() -> ctypes.CDLL:
    from .llamalog import ggml_base

    lib = ggml_base()
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_get_name.restype = ctypes.c_void_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_get_data.restype = ctypes.c_void_p
    lib.ggml_get_data.argtypes = [ctypes.c_void_p]
    lib.ggml_nelements.restype = ctypes.c_int64
    lib.ggml_nelements.argtypes = [ctypes.c_void_p]
    return lib


def _op_number(lib: ctypes.CDLL, name: bytes) -> int:
    for i in range(1, 200):  # SET_ROWS is well inside the enum, so the scan never reads past its end
        if lib.ggml_op_name(i) == name:
            return i
    raise TapError(f"libggml has no {name.decode()} op")


class CacheTap:
    """The cb_eval callback: `tap.callback` goes into llama_context_params.cb_eval (keep the tap alive as long as
    the context). An exception inside it (Ctrl-C included) stops the graph and is raised again by `check()`."""

    def __init__(self, sink: Sink):
        import llama_cpp

        self.sink = sink
        self.error: BaseException | None = None
        self._lib = _ggml_base()
        self._set_rows = _op_number(self._lib, b"SET_ROWS")
        self._checked = False
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def _check_layout(self, addr: int, t: GGMLTensor) -> None:
        n = 1
        for d in t.ne:
            n *= d
        ok = (self._lib.ggml_get_name(addr) == addr + GGMLTensor.name.offset
              and self._lib.ggml_get_data(addr) == t.data and self._lib.ggml_nelements(addr) == n)
        if not ok:
            raise TapError("this libggml's struct ggml_tensor differs from the pinned one the cache tap mirrors")
        self._checked = True

    def _on_node(self, addr: int, ask: bool, user_data) -> bool:
        if self.error is not None:
            return False
        try:
            t = GGMLTensor.from_address(addr)
            if t.op != self._set_rows:
                return False
            m = _CACHE_NAME.match(t.name)
            if not m:
                return False
            if ask:
                return True
            if not self._checked:
                self._check_layout(addr, t)
            rows = GGMLTensor.from_address(t.src[0])  # ggml_set_rows(cache, rows, indices)
            if rows.type != GGML_TYPE_F32 or rows.nb[0] != 4 or rows.ne[2] != 1 or rows.ne[3] != 1:
                raise TapError(f"unexpected cache write source for {t.name.decode()}: type {rows.type}, "
                               f"ne {list(rows.ne)}, nb {list(rows.nb)} (is flash attention on?)")
            self.sink(m[1].decode(), int(m[2]), rows.data, rows.ne[1], rows.ne[0], rows.nb[1])
            return True
        except BaseException as e:  # noqa: BLE001 - ctypes would print and drop it; keep it for check()
            self.error = self.error or e
            return False

    def check(self) -> None:
        if self.error is not None:
            e, self.error = self.error, None
            raise e
