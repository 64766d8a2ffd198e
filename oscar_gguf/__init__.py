"""oscar-gguf: OScaR 2/3/4-bit KV-cache types for llama.cpp and GGUF models."""
from .kvtypes import KV_TYPES, bits_per_element

__version__ = "0.1.0"


def load(*args, **kwargs):
    """Load a model with an OScaR KV cache; see :func:`oscar_gguf.chat.load`."""
    from .chat import load as _load

    return _load(*args, **kwargs)


def calibrate(*args, **kwargs):
    """Measure a model's OScaR calibration and write a calibrated copy; see :func:`oscar_gguf.calibrate.calibrate`."""
    from .calibrate import calibrate as _calibrate

    return _calibrate(*args, **kwargs)


def read_calibration(*args, **kwargs):
    """A model file's calibration checked against the model, or None; see :func:`oscar_gguf.calibmeta.read_calibration`."""
    from .calibmeta import read_calibration as _read

    return _read(*args, **kwargs)


__all__ = ["KV_TYPES", "bits_per_element", "calibrate", "load", "read_calibration", "__version__"]
