"""Capture llama.cpp's log lines (KV buffer sizes, rotation flags) while a model or context is created."""
from __future__ import annotations

import ctypes
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import _logger


@dataclass
class LlamaLog:
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def kv_caches(self) -> list[dict]:
        """Every 'llama_kv_cache: size = ...' line (iSWA models have two caches): cells, layers, K/V MiB."""
        pat = (r"llama_kv_cache: size = \s*[\d.]+ MiB \(\s*(\d+) cells,\s*(\d+) layers.*?"
               r"K \((\w+)\):\s*([\d.]+) MiB, V \((\w+)\):\s*([\d.]+) MiB")
        return [{"cells": int(m[1]), "layers": int(m[2]), "type_k": m[3], "k_mib": float(m[4]),
                 "type_v": m[5], "v_mib": float(m[6])} for m in re.finditer(pat, self.text)]

    def kv_sizes_mib(self) -> dict[str, float]:
        caches = self.kv_caches()
        return {"k": sum(c["k_mib"] for c in caches), "v": sum(c["v_mib"] for c in caches)}

    def tier(self) -> tuple[int, int, float]:
        """The f16 tier llama.cpp made (sinks, window, MiB); zeros when there is none (or a tier was refused)."""
        pat = r"oscar-gguf f16 tier: (\d+) sinks \+ (\d+) window per sequence,\s*([\d.]+) MiB"
        found = re.findall(pat, self.text)
        return (int(found[0][0]), int(found[0][1]), sum(float(m[2]) for m in found)) if found else (0, 0, 0.0)

    def flag(self, name: str) -> int | None:
        m = re.search(rf"\b{name} = (\d+)", self.text)
        return int(m.group(1)) if m else None


@contextmanager
def capture(echo: bool = False):
    """Collect llama.cpp log output into a LlamaLog; echo it to stderr too when asked."""
    log = LlamaLog()

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        s = text.decode("utf-8", errors="replace")
        log.lines.append(s)
        if echo:
            print(s, end="", file=sys.stderr, flush=True)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield log
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
