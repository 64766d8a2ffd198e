"""Seeded mutations of a calibrated GGUF for tests/test_fuzz.py, and the worker that loads them.

A mutation edits the header (metadata and tensor table); the tensor data is copied unchanged (os.sendfile), so one
mutated 100 MB model costs a fraction of a second. Run as a script, the worker takes BASE OUT_DIR SEED..., makes each
mutation, loads it through oscar_gguf.load and through plain llama_cpp.Llama, evaluates a few tokens when a load
succeeds, and prints one line per seed: "START seed" before, then "OK seed <what happened>" or "BAD seed <why>". A
signal ends the process; the parent reads which seed was running from the last START line.
"""
from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclass
class Header:
    version: int
    kvs: list[list]            # [key, type, payload bytes]
    tensor_info: bytes         # the tensor table, raw
    n_tensors: int
    data_start: int            # in the original file


def _skip_value(b: bytes, i: int, t: int) -> int:
    if t in _SCALAR:
        return i + struct.calcsize(_SCALAR[t])
    if t == 8:
        (n,) = struct.unpack_from("<Q", b, i)
        return i + 8 + n
    if t == 9:
        et, n = struct.unpack_from("<IQ", b, i)
        i += 12
        if et in _SCALAR:
            return i + n * struct.calcsize(_SCALAR[et])
        for _ in range(n):
            i = _skip_value(b, i, et)
        return i
    raise ValueError(t)


def read_header(path: Path) -> Header:
    b = path.read_bytes()[:64 << 20]
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", b, 4)
    i, kvs = 24, []
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", b, i)
        key = b[i + 8:i + 8 + n].decode()
        (t,) = struct.unpack_from("<I", b, i + 8 + n)
        j = _skip_value(b, i + 12 + n, t)
        kvs.append([key, t, b[i + 12 + n:j]])
        i = j
    t0 = i
    for _ in range(n_tensors):
        (n,) = struct.unpack_from("<Q", b, i)
        (nd,) = struct.unpack_from("<I", b, i + 8 + n)
        i += 8 + n + 4 + 8 * nd + 4 + 8
    align = next((struct.unpack("<I", p)[0] for k, t, p in kvs if k == "general.alignment" and t == 4), 32)
    return Header(version, kvs, b[t0:i], n_tensors, -(-i // align) * align)


def string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def header_bytes(h: Header) -> bytes:
    out = [b"GGUF", struct.pack("<IQQ", h.version, h.n_tensors, len(h.kvs))]
    for key, t, payload in h.kvs:
        out += [string(key.encode()), struct.pack("<I", t), payload]
    return b"".join(out) + h.tensor_info


def write(h: Header, src: Path, dst: Path, raw: bytes | None = None, cut: int | None = None) -> None:
    """The header (or raw header bytes), padded to its alignment, then src's tensor data; cut: keep this many bytes."""
    head = raw if raw is not None else header_bytes(h)
    align = next((struct.unpack("<I", p)[0] for k, t, p in h.kvs if k == "general.alignment" and t == 4 and len(p) == 4), 32)
    align = align if align > 0 and align & (align - 1) == 0 else 32
    head += b"\0" * (-len(head) % align)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(head)
        size = os.fstat(fi.fileno()).st_size - h.data_start
        off = h.data_start
        while size > 0:
            n = os.sendfile(fo.fileno(), fi.fileno(), off, size)
            if n == 0:
                break
            off, size = off + n, size - n
    if cut is not None:
        os.truncate(dst, min(cut, os.path.getsize(dst)))


def f32_array(payload: bytes) -> np.ndarray | None:
    et, n = struct.unpack_from("<IQ", payload, 0)
    return np.frombuffer(payload, np.float32, n, 12).copy() if et == 6 else None


def pack_f32_array(a: np.ndarray) -> bytes:
    return struct.pack("<IQ", 6, len(a)) + a.astype(np.float32).tobytes()


SPECIAL = [0.0, -1.0, np.nan, np.inf, -np.inf, 1e-30, 1e30, 1e-45, 65504.0, 3e38, -0.0]


def mutate(base: Header, src: Path, dst: Path, seed: int) -> str:
    """Write mutation `seed` of src to dst; returns what it did."""
    rng = np.random.default_rng(seed)
    h = Header(base.version, [list(kv) for kv in base.kvs], base.tensor_info, base.n_tensors, base.data_start)
    oscar = [i for i, kv in enumerate(h.kvs) if kv[0].startswith("oscar.")]
    arrays = [i for i in oscar if h.kvs[i][1] == 9]
    kind = rng.choice(["value", "value", "value", "scale", "type", "length", "drop", "bytes", "cut", "align"])
    if kind in ("value", "scale"):
        i = int(rng.choice(arrays))
        a = f32_array(h.kvs[i][2])
        idx = rng.integers(0, len(a), size=int(rng.choice([1, 1, 1, 8, len(a)])))
        if kind == "value":
            a[idx] = rng.choice(SPECIAL)
        else:
            a[idx] *= float(10.0 ** rng.uniform(-8, 8)) * rng.choice([1, -1])
        h.kvs[i][2] = pack_f32_array(a)
        what = f"{kind} {h.kvs[i][0]}[{idx[0]}..] ({len(idx)})"
    elif kind == "type":
        i = int(rng.choice(oscar))
        t = int(rng.choice([4, 5, 6, 8, 10, 12]))
        payload = {4: struct.pack("<I", 7), 5: struct.pack("<i", -7), 6: struct.pack("<f", 1.5), 8: string(b"hello"),
                   10: struct.pack("<Q", 1 << 40), 12: struct.pack("<d", 2.5)}[t]
        if t == h.kvs[i][1]:
            t, payload = 9, pack_f32_array(np.ones(3))
        h.kvs[i][1:] = [t, payload]
        what = f"type {h.kvs[i][0]} -> {t}"
    elif kind == "length":
        i = int(rng.choice(arrays))
        a = f32_array(h.kvs[i][2])
        a = a[:int(rng.integers(0, len(a)))] if rng.random() < 0.5 else np.concatenate([a, a[:int(rng.integers(1, 64))]])
        h.kvs[i][2] = pack_f32_array(a)
        what = f"length {h.kvs[i][0]} -> {len(a)}"
    elif kind == "drop":
        i = int(rng.choice(oscar))
        what = f"drop {h.kvs[i][0]}"
        del h.kvs[i]
    elif kind == "bytes":
        raw = bytearray(header_bytes(h))
        lo = next(k for k, kv in enumerate(h.kvs) if kv[0].startswith("oscar."))
        start = len(header_bytes(Header(h.version, h.kvs[:lo], b"", h.n_tensors, 0)))
        region = (start, len(raw)) if rng.random() < 0.7 else (0, len(raw))  # mostly the calibration and tensor table
        for p in rng.integers(region[0], region[1], size=int(rng.integers(1, 5))):
            raw[p] = int(rng.integers(0, 256))
        write(h, src, dst, raw=bytes(raw))
        return f"bytes {region}"
    elif kind == "cut":
        cut = int(rng.integers(0, h.data_start + 4096)) if rng.random() < 0.5 else int(rng.integers(h.data_start, os.path.getsize(src)))
        write(h, src, dst, cut=cut)
        return f"cut at {cut}"
    else:  # alignment values llama.cpp would reject or abort on
        value = int(rng.choice([0, 1, 3, 8, 16, 64, 4096]))
        h.kvs = [kv for kv in h.kvs if kv[0] != "general.alignment"] + [["general.alignment", 4, struct.pack("<I", value)]]
        what = f"general.alignment = {value}"
    write(h, src, dst)
    return what


# What a refused load may raise: our own errors, and llama-cpp-python's for a model or context llama.cpp refused
def refused(e: BaseException) -> str | None:
    from oscar_gguf.ggufmeta import GGUFError

    if isinstance(e, GGUFError):
        return f"{type(e).__name__}"
    msg = str(e)
    if type(e) in (ValueError, RuntimeError) and msg.startswith(("Failed to load model", "Failed to create llama_context")):
        return f"llama.cpp refused ({msg[:60]})"
    return None


def load_and_eval(path: Path, plain: bool) -> str:
    import llama_cpp

    from oscar_gguf import load

    tokens = [1, 504, 3458, 282, 4649, 314, 7042, 30, 378, 3458, 282, 6372, 314]
    if plain:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, type_k="oscar2", type_v="oscar2", logits_all=True,
                              verbose=False)
    else:
        llm = load(path, kv="oscar2", ctx=64, logits_all=True).llm
    try:
        llm.eval(tokens)
        if not np.isfinite(np.array(llm.scores[:len(tokens)])).all():
            raise AssertionError("NaN or infinite logits after a successful load")
    finally:
        llm.close()
    return "loaded"


def main(argv: list[str]) -> int:
    src, out = Path(argv[0]), Path(argv[1])
    base = read_header(src)
    for seed in map(int, argv[2:]):
        print(f"START {seed}", flush=True)
        dst = out / f"m{seed}.gguf"
        what = mutate(base, src, dst, seed)
        results = []
        for plain in (False, True):
            try:
                results.append(load_and_eval(dst, plain))
            except AssertionError as e:
                print(f"BAD {seed} {what}: {e}", flush=True)
                break
            except Exception as e:  # noqa: BLE001 - the point is to see every kind
                r = refused(e)
                if r is None:
                    print(f"BAD {seed} {what}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                    break
                results.append(r)
        else:
            print(f"OK {seed} {what}: {' / '.join(results)}", flush=True)
        dst.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
