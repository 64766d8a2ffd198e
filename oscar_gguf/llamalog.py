"""llama.cpp's log while a model or context is made, its errors in the exceptions we raise, and its aborts on stderr.

llama-cpp-python points file descriptors 1 and 2 at /dev/null while it loads a model quietly, so an abort of ggml
(a failed GGML_ASSERT) would end the process without a word; importing this module makes ggml's abort message go to
the stderr this process started with.
"""
from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp import _logger

GGML_LOG_LEVEL_ERROR = 4  # ggml.h


def ggml_base() -> ctypes.CDLL:
    """The libggml-base that llama_cpp loaded (same directory as its libllama, LLAMA_CPP_LIB_PATH honoured)."""
    import llama_cpp.llama_cpp as lc

    return ctypes.CDLL(str(Path(lc._lib._name).parent / "libggml-base.so"))


_ABORT_FD = os.dup(2)
_ABORT_CB = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


@_ABORT_CB
def _on_abort(message: bytes) -> None:
    os.write(_ABORT_FD, b"oscar-gguf: llama.cpp aborted: " + (message or b"?") + b"\n")


_lib = ggml_base()
_lib.ggml_set_abort_callback.restype = ctypes.c_void_p
_lib.ggml_set_abort_callback.argtypes = [_ABORT_CB]
_lib.ggml_set_abort_callback(_on_abort)


@dataclass
class LlamaLog:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.lines)


@contextmanager
def capture(echo: bool = False):
    """Collect llama.cpp's log output into a LlamaLog (echoed to stderr when asked); a ValueError or RuntimeError
    raised inside (llama-cpp-python's "Failed to create llama_context") gets llama.cpp's error lines appended."""
    log = LlamaLog()

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        s = text.decode("utf-8", errors="replace")
        log.lines.append(s)
        if level == GGML_LOG_LEVEL_ERROR:
            log.errors.append(s.strip())
        if echo:
            print(s, end="", file=sys.stderr, flush=True)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield log
    except (ValueError, RuntimeError) as e:
        if type(e) not in (ValueError, RuntimeError) or not log.errors:
            raise
        raise type(e)(f"{e}: {' | '.join(log.errors)}") from e
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
