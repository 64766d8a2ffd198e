import pytest


@pytest.fixture(scope="session")
def smollm2_path():
    from oscar_gguf.models import resolve

    return resolve("smollm2")


@pytest.fixture(scope="session")
def prose():
    from oscar_gguf.corpus import load_corpus

    return load_corpus("eval").text


@pytest.fixture(scope="session")
def smollm2_calibrated(smollm2_path, tmp_path_factory):
    """A calibrated copy of the default model (4 sequences of 1024 tokens: about 20 s on 2 cores)."""
    from oscar_gguf.calibrate import calibrate

    out = tmp_path_factory.mktemp("calibrated") / "smollm2-cal.gguf"
    calibrate(smollm2_path, out, tokens=4 * 1023, seq_len=1024, progress=False)
    return out
