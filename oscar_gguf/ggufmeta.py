"""Read the few GGUF header facts we check before handing a file to llama.cpp."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class GGUFError(ValueError):
    pass


_MISSING = object()


@dataclass(frozen=True)
class AttentionShape:
    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int


def attention_shape(path: str | Path) -> AttentionShape:
    """Head sizes of a GGUF model, from its metadata (clear GGUFError for broken or foreign files)."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        r = GGUFReader(str(path), "r")
    except Exception as e:  # the reader raises several types on malformed input
        raise GGUFError(f"{path}: not a readable GGUF file ({e})") from None

    def field(key: str, default: object = _MISSING):
        f = r.get_field(key)
        if f is None:
            if default is _MISSING:
                raise GGUFError(f"{path}: GGUF metadata has no {key}")
            return default
        return f.contents()

    def count(v) -> int:  # per-layer arrays (some architectures) -> the largest value
        return int(max(v)) if isinstance(v, list) else int(v)

    arch = field("general.architecture")
    n_embd = int(field(f"{arch}.embedding_length"))
    n_head = count(field(f"{arch}.attention.head_count"))
    n_head_kv = count(field(f"{arch}.attention.head_count_kv", n_head))
    head_k = int(field(f"{arch}.attention.key_length", n_embd // n_head))
    head_v = int(field(f"{arch}.attention.value_length", head_k))
    return AttentionShape(arch, int(field(f"{arch}.block_count")), n_head, n_head_kv, head_k, head_v)
