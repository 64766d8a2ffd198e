import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_path():
    """The default model as fetched, without calibration."""
    from oscar_gguf.models import resolve

    return resolve("smollm2", calibrated=False)


@pytest.fixture(scope="session")
def prose():
    from oscar_gguf.corpus import load_corpus

    return load_corpus("eval").text


@pytest.fixture(scope="session")
def smollm2_calibrated():
    """The default model as a user gets it: the registry's calibrated copy, made on first use (oscar-gguf
    calibrate's defaults: about 100 s on 2 cores)."""
    from oscar_gguf.models import resolve

    return resolve("smollm2")


@pytest.fixture(scope="session")
def stock_llama():
    """(PYTHONPATH entry, bin dir) of the unpatched pinned llama.cpp: llama-cpp-python, libllama and
    ggml-rpc-server, built on first use."""
    spec = importlib.util.spec_from_file_location("build_llama", ROOT / "scripts" / "build_llama.py")
    build_llama = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_llama)
    return build_llama.stock_python_path(), build_llama.stock_build(sys.executable, os.cpu_count() or 2)
