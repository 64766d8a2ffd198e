"""cffi binding of native/oscar.h: the header is the one declaration of the C API."""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import cffi

_HERE = Path(__file__).resolve().parent


def _header_text() -> str:
    # Installed package: the header ships beside the library; source checkout: native/oscar.h.
    for p in (_HERE / "oscar.h", _HERE.parent / "native" / "oscar.h"):
        if p.exists():
            return p.read_text()
    raise ImportError("oscar.h not found beside the oscar_gguf package")


def _cdef(header: str) -> str:
    m = re.search(r"/\* cffi-begin \*/(.*)/\* cffi-end \*/", header, re.S)
    if not m:
        raise ImportError("oscar.h has no cffi-begin/cffi-end section")
    return re.sub(r"//[^\n]*", "", m.group(1))


@lru_cache(maxsize=None)
def lib():
    """Return (ffi, lib) for liboscar, loading it on first use."""
    ffi = cffi.FFI()
    ffi.cdef(_cdef(_header_text()))
    path = os.environ.get("OSCAR_NATIVE_LIB") or next(iter(sorted(_HERE.glob("liboscar*.so*"))), None)
    if path is None:
        raise ImportError(f"liboscar is not built: no liboscar*.so in {_HERE} (run ./install.sh)")
    return ffi, ffi.dlopen(str(path))
