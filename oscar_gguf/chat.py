"""Load a GGUF model with an OScaR (or any llama.cpp) KV cache and chat with it through llama-cpp-python."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from .cacheinfo import CacheInfo
from .ggufmeta import AttentionShape, attention_shape, read_gguf
from .kvtypes import KVType, kv_type
from .models import DEFAULT_MODEL, resolve


def check_head_sizes(shape: AttentionShape, k: KVType, v: KVType, model: str) -> None:
    """Refuse, before llama.cpp does it with a bare NULL, head sizes a block type cannot serve."""
    for what, t, d in (("K", k, shape.head_dim_k), ("V", v, shape.head_dim_v)):
        if d % t.block_size:
            raise ValueError(f"{model}: {what} head size {d} is not a multiple of {t.block_size}, "
                             f"which {t.name} needs; use another cache type (e.g. f16 or q8_0)")


class OscarModel:
    """A llama_cpp.Llama with a named KV-cache type; flash attention is always on (quantized caches need it)."""

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, kv: str = "oscar2", ctx: int = 4096,
                 kv_k: str | None = None, kv_v: str | None = None, n_gpu_layers: int = 0,
                 sinks: int | None = None, window: int | None = None, calib: bool | None = None,
                 n_threads: int | None = None, n_batch: int = 512, logits_all: bool = False,
                 seed: int = 0, verbose: bool = False, **llama_kwargs: Any):
        import llama_cpp

        from . import llamalog

        k, v = kv_type(kv_k or kv), kv_type(kv_v or kv)
        if ctx <= 0:
            raise ValueError(f"ctx must be positive, got {ctx}")
        for name, n in (("sinks", sinks), ("window", window)):
            if n is not None and (not isinstance(n, int) or n < 0):
                raise ValueError(f"tier {name} must be a non-negative integer, got {n!r}")
        self.path: Path = resolve(model)
        info = read_gguf(self.path)  # one header walk for the shape and the calibration
        self.shape = attention_shape(info)
        check_head_sizes(self.shape, k, v, str(model))
        self.calibration = None
        calib_on = llama_cpp.llama_context_default_params().oscar_calib if calib is None else calib
        if calib_on and (k.oscar_bits or v.oscar_bits):  # a mismatch is refused here, in words, not by a NULL context
            from .calibmeta import read_calibration

            self.calibration = read_calibration(info)
        with llamalog.capture(echo=verbose) as log:  # tier and calibration: llama.cpp's defaults unless given
            self.llm = llama_cpp.Llama(
                model_path=str(self.path), n_ctx=ctx, n_batch=min(n_batch, ctx), n_ubatch=min(n_batch, ctx),
                type_k=k.ggml_type, type_v=v.ggml_type, flash_attn=True, n_gpu_layers=n_gpu_layers,
                n_threads=n_threads, logits_all=logits_all, seed=seed, verbose=verbose,
                oscar_sinks=sinks, oscar_window=window, oscar_calib=calib, **llama_kwargs)
        self.cache = CacheInfo.of(self.llm)
        self.log = log

    def chat(self, messages: list[dict[str, str]], stream: bool = False, **sampling: Any) -> dict | Iterator[dict]:
        """OpenAI-shaped chat completion (or a stream of chunks), as llama-cpp-python returns it."""
        return self.llm.create_chat_completion(messages=messages, stream=stream, **sampling)

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> "OscarModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(model: str | os.PathLike = DEFAULT_MODEL, kv: str = "oscar2", ctx: int = 4096, **kwargs: Any) -> OscarModel:
    """Load `model` (registry name, calibrated on first use, or GGUF path) with KV cache type `kv` (or `kv_k`/`kv_v`)
    and `ctx` tokens. `sinks`/`window` size the f16 tier of an OScaR cache and `calib=False` leaves the model's
    calibration unapplied; unset, they are llama.cpp's defaults (1 sink, 128 window, calibration on)."""
    return OscarModel(model, kv=kv, ctx=ctx, **kwargs)
