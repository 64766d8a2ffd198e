"""What is installed: the patched llama.cpp build, its KV types and the ggml backends compiled in."""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

from .kvtypes import KV_TYPES


def build_stamp() -> dict:
    import llama_cpp

    path = Path(llama_cpp.__file__).parent / "oscar-build.json"  # the wheel carries it (scripts/build_llama.py)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise RuntimeError(f"llama_cpp at {path.parent.parent} is not the oscar-gguf build (run ./install.sh)") from None


def backends() -> list[str]:
    """Names of the ggml backends registered in the installed libggml (CPU, CUDA, ...)."""
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_get.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    ggml.ggml_backend_reg_name.restype = ctypes.c_char_p
    ggml.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    return [ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)).decode() for i in range(ggml.ggml_backend_reg_count())]


def ggml_type_names() -> dict[int, str]:
    """ggml's own names for the enum values we use (checks that the installed library has our types)."""
    import llama_cpp

    ggml = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    ggml.ggml_type_name.restype = ctypes.c_char_p
    ggml.ggml_type_name.argtypes = [ctypes.c_int]
    return {t.ggml_type: (ggml.ggml_type_name(t.ggml_type) or b"?").decode() for t in KV_TYPES.values()}


def report() -> str:
    s = build_stamp()
    names = ggml_type_names()
    lines = [f"llama.cpp commit : {s['llama_cpp_commit']} ({s['sdist']})",
             f"patch set        : {s['patch_set']} (native {s['native']})",
             f"backends         : {', '.join(backends())}",
             "KV cache types   :"]
    for t in KV_TYPES.values():
        ok = "" if names[t.ggml_type] == t.name else f"  (library calls it {names[t.ggml_type]!r}!)"
        lines.append(f"  {t.name:7s} {t.bits_per_element:5.2f} bits/element{ok}")
    return "\n".join(lines)
