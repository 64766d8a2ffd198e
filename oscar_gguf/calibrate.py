"""oscar-gguf calibrate: per-channel mean and standard deviation of the rotated K and V that an OScaR cache stores,
measured on calibration prose and written into a copy of the model as oscar.* metadata (docs/calibration.md).

The model runs with an f16 cache, so every activation is the exact model's. The cache tap (cachetap.py) sees each
layer's cache write; native/oscar_calib.c applies llama.cpp's Hadamard rotation to those rows (the rotation a
quantized cache type would apply in the graph) and sums them per channel, on the rows' own memory.
The first token of each sequence, the attention sink, is left out.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import calibmeta
from .calibmeta import Calibration
from .ggufmeta import AttentionShape, GGUFError, attention_shape, read_gguf

# Sequences as long as the eval's contexts (K is measured after RoPE, so positions matter); ten of them keep the
# default model under 2 minutes on 2 cores (SmolLM2-135M prefills ~230 tokens/s there; docs/calibration.md).
DEFAULT_SEQ_LEN = 2048
DEFAULT_TOKENS = 10 * (DEFAULT_SEQ_LEN - 1)
MIN_TOKENS = 64
BATCH = 512


@dataclass(frozen=True)
class CalibText:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def calibration_text(path: str | os.PathLike | None = None) -> CalibText:
    """The user's text file, or the corpus's calibration documents (disjoint from the evaluation's)."""
    if path is not None:
        p = Path(path)
        try:
            return CalibText(p.name, p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read calibration text {p}: {e}") from None
    from .corpus import load_corpus

    c = load_corpus("calib")
    dirs = sorted({d.split("/")[0] for d in c.documents})
    return CalibText(f"{c.package} {c.version}: {', '.join(d + '/' for d in dirs)} ({len(c.documents)} documents)",
                     c.text)


class Accumulator:
    """Per-(layer, channel) sums of the cache rows, kept in NumPy and filled by C. `rotate`: apply llama.cpp's
    Hadamard rotation first (the rows come from an unrotated f16 cache)."""

    def __init__(self, shape: AttentionShape, rotate: bool = True):
        from ._native import lib

        self.ffi, self.lib = lib()
        self.shape = shape
        rot_k, rot_v = calibmeta.rotation_sizes(shape)
        self.rot = {"k": rot_k if rotate else 0, "v": rot_v if rotate else 0}
        dims = {"k": shape.head_dim_k, "v": shape.head_dim_v}
        self.row_len = {kv: shape.n_head_kv * dims[kv] for kv in "kv"}
        self.sum = {kv: np.zeros((shape.n_layer, self.row_len[kv])) for kv in "kv"}
        self.sumsq = {kv: np.zeros((shape.n_layer, self.row_len[kv])) for kv in "kv"}
        self.count = {kv: np.zeros(shape.n_layer, dtype=np.int64) for kv in "kv"}
        self._ptr = {kv: [(self.ffi.cast("double *", self.sum[kv][i].ctypes.data),
                           self.ffi.cast("double *", self.sumsq[kv][i].ctypes.data)) for i in range(shape.n_layer)]
                     for kv in "kv"}
        self.skip = 0  # rows at the start of the current batch to leave out (the sequence's first token)

    def add(self, kind: str, layer: int, data: int, n_rows: int, row_len: int, row_stride: int) -> None:
        if row_len != self.row_len[kind] or not 0 <= layer < self.shape.n_layer:
            raise GGUFError(f"cache write of layer {layer} has {row_len} values per token, expected "
                            f"{self.row_len[kind]} ({self.shape.n_head_kv} KV heads) for {kind.upper()}")
        s, q = self._ptr[kind][layer]
        rows = self.ffi.cast("const float *", data)
        if self.lib.oscar_calib_add(s, q, rows, n_rows, row_len, row_stride, self.skip, self.rot[kind]) != 0:
            raise GGUFError(f"oscar_calib_add refused rows of {row_len} values (rotation {self.rot[kind]})")
        self.count[kind][layer] += max(n_rows - self.skip, 0)

    def mean_std(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """[n_layer, n_head_kv, head_dim] float32 mean and (population) standard deviation."""
        n = self.count[kind][:, None].astype(np.float64)
        mean = self.sum[kind] / n
        var = np.maximum(self.sumsq[kind] / n - mean * mean, 0.0)
        shape = (self.shape.n_layer, self.shape.n_head_kv, -1)
        std = np.sqrt(var).reshape(shape)
        std[(std == 0).all(axis=-1)] = 1.0  # a head whose rows never vary: stored as row - mean = 0, exactly
        return mean.reshape(shape).astype(np.float32), std.astype(np.float32)


def _check_uniform_heads(info, shape: AttentionShape) -> None:
    v = info.get(f"{shape.arch}.attention.head_count_kv")
    if isinstance(v, list) and len(set(v)) > 1:
        raise GGUFError(f"{info.path.name}: KV head count varies by layer ({sorted(set(v))}); "
                        "calibration supports one count for all layers")


def collect(model: str | os.PathLike, text: CalibText, tokens: int = DEFAULT_TOKENS, seq_len: int = DEFAULT_SEQ_LEN,
            threads: int | None = None, progress: bool = True, cache: str = "f16", extra_sink=None) -> Accumulator:
    """Run `model` over the first `tokens` tokens of `text` in sequences of `seq_len` (BOS + text) and return the
    filled Accumulator. `cache` other than f16 observes llama.cpp's own rotated rows (tests compare the two);
    `extra_sink` also receives every cache write (tests capture rows through it)."""
    import llama_cpp
    from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaModel
    from tqdm import tqdm

    from . import llamalog
    from .cachetap import CacheTap
    from .kvtypes import kv_type
    from .models import resolve

    if seq_len < 2 or tokens < 1:
        raise ValueError(f"need seq_len >= 2 and tokens >= 1, got {seq_len} and {tokens}")
    path = resolve(model, calibrated=False)
    info = read_gguf(path)
    shape = attention_shape(info)
    _check_uniform_heads(info, shape)
    acc = Accumulator(shape, rotate=not kv_type(cache).is_quantized)

    def sink(kind, layer, data, n_rows, row_len, stride):
        acc.add(kind, layer, data, n_rows, row_len, stride)
        if extra_sink is not None:
            extra_sink(kind, layer, data, n_rows, row_len, stride)

    tap = CacheTap(sink)
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = seq_len
    cparams.n_batch = cparams.n_ubatch = min(BATCH, seq_len)  # one decode = one ubatch = one graph
    cparams.n_threads = cparams.n_threads_batch = threads or os.cpu_count() or 1
    cparams.type_k = cparams.type_v = kv_type(cache).ggml_type
    cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED  # V rows untransposed, as OScaR stores them
    cparams.cb_eval = tap.callback
    with llamalog.capture():
        lm = LlamaModel(path_model=str(path), params=mparams, verbose=False)
        ctx = LlamaContext(model=lm, params=cparams, verbose=False)
    try:
        toks = lm.tokenize(text.text.encode(), add_bos=False, special=False)[:tokens]
        if len(toks) < MIN_TOKENS:
            raise ValueError(f"calibration text {text.name!r} has {len(toks)} tokens; at least {MIN_TOKENS} are needed")
        bos = [lm.token_bos()] if lm.token_bos() >= 0 else []  # like the eval's chunks, whatever add_bos says
        per_seq = seq_len - len(bos)
        batch = LlamaBatch(n_tokens=cparams.n_batch, embd=0, n_seq_max=1, verbose=False)
        with tqdm(total=len(toks), unit="tok", desc="calibrating", file=sys.stderr, disable=not progress) as bar:
            for s in range(0, len(toks), per_seq):
                seq = bos + toks[s:s + per_seq]
                if len(seq) < 2:
                    break
                ctx.kv_cache_clear()
                for b in range(0, len(seq), cparams.n_batch):
                    acc.skip = 1 if b == 0 else 0
                    batch.set_batch(seq[b:b + cparams.n_batch], n_past=b, logits_all=False)
                    ctx.decode(batch)
                    tap.check()
                bar.update(len(seq) - len(bos))
        batch.close()
    finally:
        with llamalog.capture():
            ctx.close()
            lm.close()
    if (acc.count["k"] != acc.count["k"][0]).any() or acc.count["k"][0] == 0 or (acc.count["v"] != acc.count["k"]).any():
        raise GGUFError(f"{path.name}: the cache tap saw uneven or no cache writes per layer "
                        f"(K {acc.count['k'].tolist()}, V {acc.count['v'].tolist()})")
    return acc


def measure(model: str | os.PathLike, text: str | os.PathLike | None = None, tokens: int = DEFAULT_TOKENS,
            seq_len: int = DEFAULT_SEQ_LEN, threads: int | None = None, progress: bool = True) -> Calibration:
    """The calibration of `model` (registry name or GGUF path) on `text` (a file; default the calibration corpus)."""
    from .models import resolve

    path = resolve(model, calibrated=False)
    info = read_gguf(path)
    ct = calibration_text(text)
    acc = collect(path, ct, tokens, seq_len, threads, progress)
    shape = acc.shape
    (k_mean, k_std), (v_mean, v_std) = acc.mean_std("k"), acc.mean_std("v")
    try:  # what llama.cpp would refuse at load is refused here, before anything is written
        calibmeta.check_values(k_mean, k_std, calibmeta.KEY_K_MEAN, calibmeta.KEY_K_STD)
        calibmeta.check_values(v_mean, v_std, calibmeta.KEY_V_MEAN, calibmeta.KEY_V_STD)
    except calibmeta.CalibrationError as e:
        raise GGUFError(f"{path.name}: the measured statistics cannot be used: {e}") from None
    return Calibration(ct.name, ct.sha256, int(acc.count["k"][0]), seq_len, calibmeta.model_fingerprint(info),
                       shape.n_layer, shape.n_head_kv, shape.head_dim_k, shape.head_dim_v, acc.rot["k"], acc.rot["v"],
                       k_mean, k_std, v_mean, v_std)


def describe(cal: Calibration, src: Path, dst: Path) -> str:
    """What calibrate writes, for --dry-run and the final report."""
    lines = [f"{src} -> {dst}: all metadata and tensors of the input, plus:"]
    for key, value, tname in cal.fields():
        if tname.endswith("_ARRAY"):
            a = np.asarray(value)
            value = f"[{a.size} values: min {a.min():.4g}, mean {a.mean():.4g}, max {a.max():.4g}]"
        lines.append(f"  {key:22s} {tname.lower():14s} {value}")
    return "\n".join(lines)


def calibrate(model: str | os.PathLike, out: str | os.PathLike, text: str | os.PathLike | None = None,
              tokens: int = DEFAULT_TOKENS, seq_len: int = DEFAULT_SEQ_LEN, threads: int | None = None,
              dry_run: bool = False, progress: bool = True) -> Calibration:
    """Measure `model`'s calibration and write a copy of it with the oscar.* metadata to `out` (atomically;
    `out` is never the input). dry_run: measure and print what would be written, write nothing."""
    from .ggufwrite import check_output, write_with_metadata
    from .models import resolve

    src, dst = resolve(model, calibrated=False), Path(out)
    check_output(src, dst)  # before minutes of measuring
    t0 = time.time()
    cal = measure(src, text, tokens, seq_len, threads, progress)
    seconds = time.time() - t0
    if dry_run:
        print(describe(cal, src, dst) + f"\n(dry run: nothing written; measuring took {seconds:.1f} s)")
        return cal
    write_with_metadata(src, dst, cal.fields(), calibmeta.PREFIX, progress)
    print(f"wrote {dst}: {cal.tokens} tokens of {cal.text} in {seconds:.1f} s", file=sys.stderr)
    return cal
