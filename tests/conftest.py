import pytest


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
