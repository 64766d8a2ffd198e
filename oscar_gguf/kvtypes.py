"""The KV-cache types a user can name, their ggml enum values and their storage cost."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KVType:
    name: str
    ggml_type: int      # enum ggml_type value in the patched tree
    block_size: int     # elements per block
    block_bytes: int    # bytes per block
    oscar_bits: int = 0  # code width for OScaR types, 0 otherwise

    @property
    def bits_per_element(self) -> float:
        return 8.0 * self.block_bytes / self.block_size

    @property
    def is_quantized(self) -> bool:
        return self.name not in ("f32", "f16", "bf16")


# Upstream cache types accepted by llama.cpp's -ctk/-ctv, plus ours (enum values 43..45, patches/0001).
KV_TYPES: dict[str, KVType] = {t.name: t for t in [
    KVType("f32", 0, 1, 4),
    KVType("f16", 1, 1, 2),
    KVType("bf16", 30, 1, 2),
    KVType("q8_0", 8, 32, 34),
    KVType("q4_0", 2, 32, 18),
    KVType("q4_1", 3, 32, 20),
    KVType("iq4_nl", 20, 32, 18),
    KVType("q5_0", 6, 32, 22),
    KVType("q5_1", 7, 32, 24),
    KVType("oscar2", 43, 64, 18, 2),
    KVType("oscar3", 44, 64, 26, 3),
    KVType("oscar4", 45, 64, 34, 4),
]}
OSCAR_TYPES = ("oscar2", "oscar3", "oscar4")


def kv_type(name: str) -> KVType:
    """Look up a cache type by name; a wrong name lists the valid ones."""
    try:
        return KV_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown KV cache type {name!r}; valid types: {', '.join(KV_TYPES)}") from None


def oscar_type(name: str) -> KVType:
    t = kv_type(name)
    if not t.oscar_bits:
        raise ValueError(f"{name!r} is not an OScaR type; valid types: {', '.join(OSCAR_TYPES)}")
    return t


def variants(names: list[str], tiers: list[tuple[int, int]] | None) -> dict[str, tuple[str, int | None, int | None]]:
    """label -> (cache type, sinks, window) for a run that compares types: with tiers, each OScaR type once per
    f16 tier ("oscar2 s1w128"); every other type once, and OScaR types too without tiers (None: the default)."""
    out: dict[str, tuple[str, int | None, int | None]] = {}
    for name in names:
        t = kv_type(name)
        if t.oscar_bits and tiers:
            out.update({f"{t.name} s{s}w{w}": (t.name, s, w) for s, w in tiers})
        else:
            out[t.name] = (t.name, None, None)
    return out


def bits_per_element(name: str) -> float:
    return kv_type(name).bits_per_element
