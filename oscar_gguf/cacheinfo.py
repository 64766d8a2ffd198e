"""What a context's KV caches hold, as llama.cpp reports it (llama_oscar_get_cache_info, patches/0006)."""
from __future__ import annotations

from dataclasses import dataclass

MIB = 2 ** 20


@dataclass(frozen=True)
class Cache:
    """One KV cache of a context (sliding-window models have two)."""
    type_k: str
    type_v: str
    cells: int
    layers: int
    k_mib: float
    v_mib: float
    tier_sinks: int
    tier_window: int
    tier_mib: float
    calib_k: bool
    calib_v: bool
    rot_k: int  # Hadamard sizes, 0: none
    rot_v: int


@dataclass(frozen=True)
class CacheInfo:
    """A context's KV caches, summed where they add up."""
    type_k: str
    type_v: str
    k_mib: float
    v_mib: float
    attn_rot_k: int  # Hadamard size of the K rotation, 0: none
    attn_rot_v: int
    tier_sinks: int = 0
    tier_window: int = 0
    tier_mib: float = 0.0
    calibrated: bool = False  # llama.cpp applied the model's calibration (docs/calibration.md)
    caches: tuple[Cache, ...] = ()

    @classmethod
    def of(cls, llm) -> "CacheInfo":
        """The caches of a llama_cpp.Llama's context."""
        import llama_cpp

        names = {v: k for k, v in llama_cpp.GGML_TYPE_NAMES.items()}
        first = llama_cpp.llama_oscar_get_cache_info(llm._ctx.ctx, 0)
        caches = []
        for i in range(first.n_caches):
            c = llama_cpp.llama_oscar_get_cache_info(llm._ctx.ctx, i)
            caches.append(Cache(names.get(c.type_k, str(c.type_k)), names.get(c.type_v, str(c.type_v)), c.n_cells,
                                c.n_layer, c.k_bytes / MIB, c.v_bytes / MIB, c.tier_sinks, c.tier_window,
                                c.tier_bytes / MIB, bool(c.calib_k), bool(c.calib_v), c.rot_k, c.rot_v))
        if not caches:
            raise RuntimeError("the context has no KV cache")
        c0 = caches[0]
        return cls(c0.type_k, c0.type_v, sum(c.k_mib for c in caches), sum(c.v_mib for c in caches), c0.rot_k,
                   c0.rot_v, c0.tier_sinks, c0.tier_window, sum(c.tier_mib for c in caches),
                   any(c.calib_k or c.calib_v for c in caches), tuple(caches))
