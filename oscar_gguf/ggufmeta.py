"""A GGUF header walker: the integrity check and the metadata we read before handing a file to llama.cpp.

One pass over the header, no tensor data read: metadata scalars and numeric arrays are decoded, string arrays
(the tokenizer's vocabulary) are only stepped over, and the tensor table gives the bytes the data must span.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"


class GGUFError(ValueError):
    pass


# scalar metadata value types -> struct format (8 = string, 9 = array)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
# (block size, bytes per block) for ggml types common in GGUF files; unknown types are checked by offset only
_GGML_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
    8: (32, 34), 9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144),
    13: (256, 176), 14: (256, 210), 15: (256, 292), 24: (1, 1), 25: (1, 2),
    26: (1, 4), 27: (1, 8), 28: (1, 8), 30: (1, 2),
}


def tensor_nbytes(ggml_type: int, n: int, name: str) -> int:
    """Data bytes of a tensor of n elements: the table above (ggml's sizes), then the gguf package's for rarer
    types (its Q8_1 entry is older than ggml's, so the table comes first)."""
    if ggml_type in _GGML_SIZES:
        blk, size = _GGML_SIZES[ggml_type]
        return n // blk * size
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        blk, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise GGUFError(f"tensor {name} has ggml type {ggml_type}, which neither ggml's table here nor the gguf "
                        "package knows") from None
    return n // blk * size


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dims: tuple[int, ...]  # GGUF order: ne0 (the contiguous dimension) first
    ggml_type: int
    offset: int            # from the start of the tensor data


@dataclass
class GGUFInfo:
    path: Path
    version: int
    size: int                      # file bytes
    data_end: int                  # bytes the tensor data needs (header, alignment padding and tensors)
    metadata: dict[str, Any] = field(default_factory=dict)  # string arrays map to None
    data_start: int = 0            # file offset of the tensor data
    tensors: list[TensorEntry] = field(default_factory=list)  # in file order
    types: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # key -> (GGUF type, array element type)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


class _Walker:
    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def read(self, n: int) -> bytes:
        if self.f.tell() + n > self.size:
            raise EOFError
        return self.f.read(n)

    def unpack(self, fmt: str):
        return struct.unpack(f"<{fmt}", self.read(struct.calcsize(fmt)))[0]

    def unpack_list(self, fmt: str, n: int) -> list:
        return list(struct.unpack(f"<{n}{fmt}", self.read(n * struct.calcsize(fmt))))

    def string(self) -> str:
        return self.read(self.unpack("Q")).decode("utf-8", errors="replace")

    def value(self, t: int) -> Any:
        if t in _SCALAR:
            return self.unpack(_SCALAR[t])
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.unpack("I"), self.unpack("Q")
            if et in _SCALAR:
                return self.unpack_list(_SCALAR[et], n)
            for _ in range(n):
                self.value(et)
            return None
        raise ValueError(f"unknown metadata type {t}")


def read_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Walk a GGUF header: GGUFError for a missing, foreign, truncated or corrupt file."""
    p = Path(path)
    if not p.is_file():
        raise GGUFError(f"model file not found: {p}")
    size = p.stat().st_size
    with open(p, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFError(f"not a GGUF file (no 'GGUF' magic bytes): {p}")
        w = _Walker(f, size)
        try:
            version = w.unpack("I")
            if version not in (2, 3):
                raise GGUFError(f"unsupported GGUF version {version}: {p}")
            n_tensors, n_kv = w.unpack("Q"), w.unpack("Q")
            meta: dict[str, Any] = {}
            types: dict[str, tuple[int, int | None]] = {}
            for _ in range(n_kv):
                key = w.string()
                t = w.unpack("I")
                if t == 9:  # arrays: the element type is the next word, which value() reads again
                    pos = f.tell()
                    types[key] = (t, w.unpack("I"))
                    f.seek(pos)
                else:
                    types[key] = (t, None)
                meta[key] = w.value(t)
            end = 0
            tensors = []
            for _ in range(n_tensors):
                name = w.string()
                dims = tuple(w.unpack_list("Q", w.unpack("I")))
                n = 1
                for d in dims:
                    n *= d
                gtype, offset = w.unpack("I"), w.unpack("Q")
                tensors.append(TensorEntry(name, dims, gtype, offset))
                blk, nbytes = _GGML_SIZES.get(gtype, (1, 0))
                end = max(end, offset + n // blk * nbytes)
            alignment = meta.get("general.alignment", 32)
            if types.get("general.alignment", (4, None))[0] != 4 or alignment <= 0 or alignment & (alignment - 1):
                raise GGUFError(f"general.alignment must be a uint32 power of two, got {alignment!r}: {p}")
            data_start = -(-f.tell() // alignment) * alignment
        except GGUFError:
            raise
        except (EOFError, struct.error, ValueError, TypeError):
            raise GGUFError(f"truncated or corrupt GGUF file ({size} bytes): {p}") from None
    return GGUFInfo(p, version, size, data_start + end, meta, data_start, tensors, types)


# ggml's TENSOR_ALIGNMENT: llama.cpp maps the file and aborts (an assert in ggml_backend_cpu_buffer_from_ptr) when
# the tensor data it maps does not start on this boundary
TENSOR_ALIGNMENT = 32


def check_complete(info: GGUFInfo) -> None:
    """The tensor data is all there and where llama.cpp can map it."""
    if info.data_end > info.size:
        raise GGUFError(f"truncated GGUF file: tensor data needs {info.data_end} bytes, "
                        f"file has {info.size}: {info.path}")
    for t in info.tensors:
        if (info.data_start + t.offset) % TENSOR_ALIGNMENT:
            raise GGUFError(f"tensor {t.name} starts at file offset {info.data_start + t.offset}, not a multiple of "
                            f"{TENSOR_ALIGNMENT} (general.alignment {info.get('general.alignment', 32)}): llama.cpp "
                            f"cannot map it; {info.path}")


@dataclass(frozen=True)
class AttentionShape:
    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int


_MISSING = object()


def attention_shape(path: str | os.PathLike | GGUFInfo) -> AttentionShape:
    """Head sizes of a GGUF model, from its metadata (clear GGUFError for broken or foreign files)."""
    info = path if isinstance(path, GGUFInfo) else read_gguf(path)

    def get(key: str, default: object = _MISSING):
        v = info.get(key, _MISSING)
        if v is _MISSING or v is None:
            if default is _MISSING:
                raise GGUFError(f"{info.path}: GGUF metadata has no {key}")
            return default
        return v

    def count(v) -> int:  # per-layer arrays (some architectures) -> the largest value
        return int(max(v)) if isinstance(v, list) else int(v)

    arch = get("general.architecture")
    n_embd = int(get(f"{arch}.embedding_length"))
    n_head = count(get(f"{arch}.attention.head_count"))
    n_head_kv = count(get(f"{arch}.attention.head_count_kv", n_head))
    head_k = int(get(f"{arch}.attention.key_length", n_embd // n_head))
    head_v = int(get(f"{arch}.attention.value_length", head_k))
    return AttentionShape(arch, int(get(f"{arch}.block_count")), n_head, n_head_kv, head_k, head_v)
