"""The calibration's GGUF metadata: the one place that names the oscar.* keys, writes their values and reads
them back, checked against the model they sit in (docs/calibration.md describes the layout).

Statistics are float32 arrays of n_layer * n_head_kv * head_dim values, channel fastest, then KV head, then
layer: the [head_dim, n_head_kv] per-layer layout of llama.cpp's K/V rows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _native as native
from .ggufmeta import AttentionShape, GGUFError, GGUFInfo, attention_shape, read_gguf, tensor_nbytes

PREFIX = "oscar."
FORMAT_VERSION = 1

KEY_VERSION = "oscar.version"              # uint32: FORMAT_VERSION
KEY_TEXT = "oscar.text"                    # string: what the statistics were measured on
KEY_TEXT_SHA256 = "oscar.text_sha256"      # string: sha256 of that text (UTF-8)
KEY_TOKENS = "oscar.tokens"                # uint64: vectors per (layer, KV head), sequence-first tokens left out
KEY_SEQ_LEN = "oscar.seq_len"              # uint32: tokens per calibration sequence
KEY_FINGERPRINT = "oscar.fingerprint"      # string: "oscar-fp1:<hex>" of the model's tensors (model_fingerprint)
KEY_LAYERS = "oscar.block_count"           # uint32
KEY_HEADS_KV = "oscar.head_count_kv"       # uint32
KEY_DIM_K = "oscar.key_length"             # uint32: K head size
KEY_DIM_V = "oscar.value_length"           # uint32: V head size
KEY_ROT_K = "oscar.rot_k"                  # uint32: Hadamard block size K was measured after
KEY_ROT_V = "oscar.rot_v"                  # uint32: same for V
KEY_K_MEAN, KEY_K_STD = "oscar.k_mean", "oscar.k_std"  # float32 arrays
KEY_V_MEAN, KEY_V_STD = "oscar.v_mean", "oscar.v_std"
STAT_KEYS = (KEY_K_MEAN, KEY_K_STD, KEY_V_MEAN, KEY_V_STD)


class CalibrationError(GGUFError):
    """Calibration metadata that is broken or belongs to another model; the message names what differs."""


@dataclass
class Calibration:
    text: str
    text_sha256: str
    tokens: int
    seq_len: int
    fingerprint: str
    n_layer: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    rot_k: int
    rot_v: int
    k_mean: np.ndarray  # [n_layer, n_head_kv, head_dim_k] float32
    k_std: np.ndarray
    v_mean: np.ndarray  # [n_layer, n_head_kv, head_dim_v] float32
    v_std: np.ndarray

    def fields(self) -> list[tuple[str, object, str]]:
        """(key, value, GGUF value type name) in writing order; arrays flattened to float32."""
        f = [(KEY_VERSION, FORMAT_VERSION, "UINT32"), (KEY_TEXT, self.text, "STRING"),
             (KEY_TEXT_SHA256, self.text_sha256, "STRING"), (KEY_TOKENS, self.tokens, "UINT64"),
             (KEY_SEQ_LEN, self.seq_len, "UINT32"), (KEY_FINGERPRINT, self.fingerprint, "STRING"),
             (KEY_LAYERS, self.n_layer, "UINT32"), (KEY_HEADS_KV, self.n_head_kv, "UINT32"),
             (KEY_DIM_K, self.head_dim_k, "UINT32"), (KEY_DIM_V, self.head_dim_v, "UINT32"),
             (KEY_ROT_K, self.rot_k, "UINT32"), (KEY_ROT_V, self.rot_v, "UINT32")]
        for key, a in zip(STAT_KEYS, (self.k_mean, self.k_std, self.v_mean, self.v_std)):
            f.append((key, np.asarray(a, dtype=np.float32).ravel(), "FLOAT32_ARRAY"))
        return f


def rotation_sizes(shape: AttentionShape) -> tuple[int, int]:
    """The Hadamard block sizes llama.cpp rotates K and V with before a quantized cache write
    (llama_kv_cache::build_input_k_rot/v_rot): K the largest power of two from 64 up that divides the head
    size, V always 64."""
    rot_k = 64
    while shape.head_dim_k % (2 * rot_k) == 0:
        rot_k *= 2
    return rot_k, 64


def model_fingerprint(info: GGUFInfo) -> str:
    """native/oscar_fingerprint.c's fingerprint of the model's tensors, the one llama.cpp checks: unchanged by
    metadata edits (a calibrated copy has its input's), changed by re-quantizing or fine-tuning."""
    ffi, lib = native.lib()
    names = [ffi.new("char[]", t.name.encode()) for t in info.tensors]
    table = ffi.new("oscar_fp_tensor[]", max(len(info.tensors), 1))
    for i, t in enumerate(info.tensors):
        if len(t.dims) > 4:
            raise GGUFError(f"tensor {t.name} has {len(t.dims)} dims (GGUF allows 4): {info.path}")
        n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        table[i].name, table[i].type = names[i], t.ggml_type
        table[i].ne[0:4] = [*t.dims, 1, 1, 1, 1][:4]
        table[i].offset, table[i].nbytes = t.offset, tensor_nbytes(t.ggml_type, n, t.name)
    out = ffi.new("char[]", lib.OSCAR_FP_LEN)
    rc = lib.oscar_fingerprint(str(info.path).encode(), info.data_start, table, len(info.tensors), out)
    if rc == -1:
        raise GGUFError(f"cannot read {info.path}")
    if rc != 0:
        raise GGUFError(f"truncated GGUF file: tensor data ends past the file's end: {info.path}")
    return ffi.string(out).decode()


def has_calibration(info: GGUFInfo) -> bool:
    return KEY_VERSION in info.metadata


# GGUF value types of the keys (ggufmeta's (type, array element type)): 4 uint32, 8 string, 10 uint64, 9 array
# of 6 float32
_GGUF_TYPE_NAMES = {4: "uint32", 8: "string", 10: "uint64", 6: "float32"}
KEY_TYPES = {KEY_VERSION: (4, None), KEY_TEXT: (8, None), KEY_TEXT_SHA256: (8, None), KEY_TOKENS: (10, None),
             KEY_SEQ_LEN: (4, None), KEY_FINGERPRINT: (8, None), KEY_LAYERS: (4, None), KEY_HEADS_KV: (4, None),
             KEY_DIM_K: (4, None), KEY_DIM_V: (4, None), KEY_ROT_K: (4, None), KEY_ROT_V: (4, None),
             **{k: (9, 6) for k in STAT_KEYS}}


def _type_name(t: tuple[int, int | None]) -> str:
    return f"array of {_GGUF_TYPE_NAMES.get(t[1], f'type {t[1]}')}" if t[0] == 9 else _GGUF_TYPE_NAMES.get(t[0], f"type {t[0]}")


def check_values(mean: np.ndarray, std: np.ndarray, mean_key: str, std_key: str) -> None:
    """native/oscar_calib.c's check of statistics before they become planes, the one llama.cpp runs at load."""
    ffi, lib = native.lib()
    n_layer, n_head, dim = std.shape
    m, s = np.ascontiguousarray(mean, np.float32), np.ascontiguousarray(std, np.float32)
    err = ffi.new("char[]", 512)
    if lib.oscar_calib_check(ffi.from_buffer("float[]", m), ffi.from_buffer("float[]", s), n_layer, n_head, dim,
                             mean_key.encode(), std_key.encode(), err, 512) != 0:
        raise CalibrationError(ffi.string(err).decode())


def _decode(info: GGUFInfo) -> Calibration:
    meta = info.metadata
    wrong = [f"{k} is {_type_name(info.types[k])}, not {_type_name(t)}" for k, t in KEY_TYPES.items()
             if k in info.types and info.types[k] != t]
    if KEY_VERSION in info.types and info.types[KEY_VERSION] != KEY_TYPES[KEY_VERSION]:
        raise CalibrationError(f"{info.path}: calibration metadata mistypes {wrong[0]}")
    version = meta.get(KEY_VERSION)
    if version != FORMAT_VERSION:
        raise CalibrationError(f"{info.path}: calibration format version {version}, this oscar-gguf reads "
                               f"version {FORMAT_VERSION}; calibrate the model again")
    missing = [k for k in KEY_TYPES if k not in info.types]
    if missing or wrong:
        raise CalibrationError(f"{info.path}: calibration metadata " + "; ".join(
            ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"mistypes {', '.join(wrong)}"] if wrong else [])))
    n_layer, n_head_kv, dk, dv = (int(meta[k]) for k in (KEY_LAYERS, KEY_HEADS_KV, KEY_DIM_K, KEY_DIM_V))
    arrays = {}
    for key, d in zip(STAT_KEYS, (dk, dk, dv, dv)):
        a = np.asarray(meta[key], dtype=np.float32)
        if a.size != n_layer * n_head_kv * d:
            raise CalibrationError(f"{info.path}: {key} has {a.size} values, expected {n_layer} layers x "
                                   f"{n_head_kv} KV heads x {d} channels = {n_layer * n_head_kv * d}")
        arrays[key] = a.reshape(n_layer, n_head_kv, d)
    try:
        check_values(arrays[KEY_K_MEAN], arrays[KEY_K_STD], KEY_K_MEAN, KEY_K_STD)
        check_values(arrays[KEY_V_MEAN], arrays[KEY_V_STD], KEY_V_MEAN, KEY_V_STD)
    except CalibrationError as e:
        raise CalibrationError(f"{info.path}: calibration values are unusable: {e}") from None
    return Calibration(str(meta[KEY_TEXT]), str(meta[KEY_TEXT_SHA256]), int(meta[KEY_TOKENS]), int(meta[KEY_SEQ_LEN]),
                       str(meta[KEY_FINGERPRINT]), n_layer, n_head_kv, dk, dv, int(meta[KEY_ROT_K]),
                       int(meta[KEY_ROT_V]), *(arrays[k] for k in STAT_KEYS))


def check_matches(cal: Calibration, model: GGUFInfo, fingerprint: str | None = None) -> None:
    """CalibrationError naming every way `cal` does not fit `model` (shape, rotation sizes, tensors)."""
    shape = attention_shape(model)
    rot_k, rot_v = rotation_sizes(shape)
    diffs = [f"{what}: calibration {have}, model {want}" for what, have, want in (
        ("layers", cal.n_layer, shape.n_layer), ("KV heads", cal.n_head_kv, shape.n_head_kv),
        ("K head size", cal.head_dim_k, shape.head_dim_k), ("V head size", cal.head_dim_v, shape.head_dim_v),
        ("K rotation", cal.rot_k, rot_k), ("V rotation", cal.rot_v, rot_v)) if have != want]
    if not diffs:  # the fingerprint reads tensor data: only worth it when the shapes agree
        fp = fingerprint or model_fingerprint(model)
        if cal.fingerprint != fp:
            diffs.append(f"tensor fingerprint: calibration {cal.fingerprint[:19]}..., model {fp[:19]}...")
    if diffs:
        raise CalibrationError(f"calibration does not match the model {model.path.name} ({'; '.join(diffs)})")


def read_calibration(model: str | os.PathLike | GGUFInfo, source: str | os.PathLike | None = None) -> Calibration | None:
    """The calibration stored in `source` (default: the model file itself), checked against `model`;
    None when there is none. A mismatch raises CalibrationError naming what differs."""
    info = model if isinstance(model, GGUFInfo) else read_gguf(model)
    src = info if source is None else read_gguf(Path(source))
    if not has_calibration(src):
        return None
    cal = _decode(src)
    check_matches(cal, info)
    return cal
