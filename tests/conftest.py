import pytest


@pytest.fixture(scope="session")
def smollm2_path():
    from oscar_gguf.models import resolve

    return resolve("smollm2")


@pytest.fixture(scope="session")
def prose():
    from oscar_gguf.corpus import load_corpus

    return load_corpus("eval").text
