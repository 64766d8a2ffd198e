"""Bad input gets a clear one-line error and leaves nothing half-written."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from oscar_gguf import cli
from oscar_gguf.chat import load
from oscar_gguf.models import ModelError

ROOT = Path(__file__).resolve().parent.parent


def tiny_gguf(path: Path, head_dim: int) -> Path:
    """A metadata-only llama GGUF whose attention heads are head_dim wide."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(4 * head_dim)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(128)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unknown_type_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown KV cache type 'oscar5'; valid types: .*oscar2, oscar3, oscar4"):
        load("smollm2", kv="oscar5")
    with pytest.raises(ValueError, match="unknown KV cache type 'Q4_0'"):
        load("smollm2", kv_k="Q4_0")


def test_cli_reports_errors_in_one_line(capsys):
    assert cli.main(["chat", "--kv", "turbo2", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("oscar-gguf: error: unknown KV cache type 'turbo2'") and "\n" not in err


@pytest.mark.parametrize("kv", ["oscar2", "oscar3", "oscar4"])
def test_head_size_not_multiple_of_64_is_refused(tmp_path, kv):
    path = tiny_gguf(tmp_path / "h80.gguf", 80)
    with pytest.raises(ValueError, match=f"K head size 80 is not a multiple of 64, which {kv} needs"):
        load(path, kv=kv)


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load(tmp_path / "absent.gguf", kv="oscar2")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="not a GGUF"):
        load(junk, kv="oscar2")
    good = tiny_gguf(tmp_path / "cut.gguf", 64)
    good.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(ModelError, match="truncated"):
        load(good, kv="oscar2")


def test_sdist_with_wrong_hash_is_set_aside(tmp_path):
    spec = importlib.util.spec_from_file_location("build_llama", ROOT / "scripts" / "build_llama.py")
    build_llama = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_llama)
    fake = tmp_path / build_llama.SDIST_FILE
    fake.write_bytes(b"not the sdist")
    with pytest.raises(build_llama.BuildError, match="sha256 .* expected 832db069"):
        build_llama.check_sdist(fake)
    assert not fake.exists() and fake.with_name(fake.name + ".bad").exists()
