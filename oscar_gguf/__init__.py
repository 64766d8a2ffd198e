"""oscar-gguf: OScaR 2/3/4-bit KV-cache types for llama.cpp and GGUF models."""
from .kvtypes import KV_TYPES, bits_per_element

__version__ = "0.1.0"


def load(*args, **kwargs):
    """Load a model with an OScaR KV cache; see :func:`oscar_gguf.chat.load`."""
    from .chat import load as _load

    return _load(*args, **kwargs)


__all__ = ["KV_TYPES", "bits_per_element", "load", "__version__"]
