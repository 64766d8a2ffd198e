"""The GGUF header walker (oscar_gguf/ggufmeta.py) against the gguf package's reader on the registry models."""
from __future__ import annotations

import math

import pytest

from oscar_gguf.ggufmeta import attention_shape, read_gguf
from oscar_gguf.models import resolve


@pytest.mark.parametrize("name", ["smollm2", "gemma3-270m"])
def test_metadata_matches_gguf_reader(name):
    from gguf import GGUFReader

    path = resolve(name)
    ours = read_gguf(path)
    ref = GGUFReader(str(path), "r")
    keys = [k for k in ref.fields if not k.startswith("GGUF.")]
    assert sorted(ours.metadata) == sorted(keys)
    for k in keys:
        want, got = ref.get_field(k).contents(), ours.metadata[k]
        if isinstance(want, list) and want and isinstance(want[0], str):
            assert got is None, k  # string arrays (the vocabulary) are stepped over
        elif isinstance(want, float):
            assert math.isclose(got, want, rel_tol=1e-6), k
        else:
            assert got == want, k
    assert ours.data_end <= ours.size


def test_attention_shapes():
    s = attention_shape(resolve("smollm2"))
    assert (s.arch, s.n_layer, s.n_head, s.n_head_kv, s.head_dim_k) == ("llama", 30, 9, 3, 64)
    g = attention_shape(resolve("gemma3-270m"))
    assert (g.arch, g.n_head_kv, g.head_dim_k, g.head_dim_v) == ("gemma3", 1, 256, 256)
