"""The KV-cache types a user can name, their ggml enum values and their storage cost."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


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


class Variant(NamedTuple):
    kv: str                # cache type
    sinks: int | None      # f16 tier (None: the default)
    window: int | None
    calib: bool = True     # apply the model's calibration (when it has one)


CALIB_CHOICES = ("on", "off", "both")


def variants(names: list[str], tiers: list[tuple[int, int]] | None, calib: str = "on") -> dict[str, Variant]:
    """label -> Variant for a run that compares types: with tiers, each OScaR type once per f16 tier
    ("oscar2 s1w128"); every other type once, and OScaR types too without tiers. calib "both" measures each
    OScaR variant uncalibrated and calibrated ("oscar2 s1w128 +cal"), "on"/"off" one way."""
    if calib not in CALIB_CHOICES:
        raise ValueError(f"calib must be one of {', '.join(CALIB_CHOICES)}, got {calib!r}")
    out: dict[str, Variant] = {}
    for name in names:
        t = kv_type(name)
        if not t.oscar_bits:
            out[t.name] = Variant(t.name, None, None)
            continue
        for label, s, w in ([(f"{t.name} s{s}w{w}", s, w) for s, w in tiers] if tiers else [(t.name, None, None)]):
            if calib == "both":
                out[label] = Variant(t.name, s, w, False)
                out[label + " +cal"] = Variant(t.name, s, w, True)
            else:
                out[label] = Variant(t.name, s, w, calib == "on")
    return out


def bits_per_element(name: str) -> float:
    return kv_type(name).bits_per_element


def effective_bits(kv_k: str, kv_v: str, head_dim_k: int, head_dim_v: int, ctx: int, sinks: int = 0,
                   window: int = 0) -> float:
    """Bits per K/V element a sequence of ctx tokens costs: the main cache holds every token, and an OScaR cache's
    f16 tier holds up to sinks + window of them again (DESIGN.md section 5: 2.25 + 129 * 16 / 2048 = 3.26 for
    oscar2 with the default tier at 2048)."""
    k, v = kv_type(kv_k), kv_type(kv_v)
    main = (k.bits_per_element * head_dim_k + v.bits_per_element * head_dim_v) / (head_dim_k + head_dim_v)
    tier = min(sinks + window, ctx) if (k.oscar_bits or v.oscar_bits) else 0
    return main + 16.0 * tier / ctx
