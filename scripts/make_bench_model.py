#!/usr/bin/env python3
"""Write a GGUF with the shape of Llama-3.1-8B and random Q4_0 weights, for speed measurements only.

Its weights are random (never all-zero, so no kernel meets unusually easy data) and scaled so activations
keep unit size through the layers; its vocabulary is placeholder tokens. Tensors are written one at a
time, so memory stays small; the file appears under its name only when complete.

    python3 scripts/make_bench_model.py OUT.gguf [--layers 32 --embd 4096 ...]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType

QK4_0, Q4_0_BYTES = 32, 18


def q4_0_random(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q4_0 rows: uniform 4-bit codes, fp16 scales giving each weight a std of 1/sqrt(cols)."""
    blocks = rng.integers(0, 256, size=(rows * cols // QK4_0, Q4_0_BYTES), dtype=np.uint8)
    # (q - 8) for uniform q in 0..15 has std 4.61; vary the scale a little per block
    d = (rng.uniform(0.75, 1.25, size=len(blocks)) / (4.61 * np.sqrt(cols))).astype(np.float16)
    blocks[:, :2] = d.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, cols // QK4_0 * Q4_0_BYTES)


def tensors(a) -> list[tuple[str, tuple[int, int] | tuple[int]]]:
    """(name, (rows, cols)) for the matrices, (n,) for the norms, in file order."""
    kv = a.embd // a.heads * a.kv_heads
    out: list = [("token_embd.weight", (a.vocab, a.embd))]
    for i in range(a.layers):
        out += [(f"blk.{i}.attn_norm.weight", (a.embd,)),
                (f"blk.{i}.attn_q.weight", (a.embd, a.embd)), (f"blk.{i}.attn_k.weight", (kv, a.embd)),
                (f"blk.{i}.attn_v.weight", (kv, a.embd)), (f"blk.{i}.attn_output.weight", (a.embd, a.embd)),
                (f"blk.{i}.ffn_norm.weight", (a.embd,)),
                (f"blk.{i}.ffn_gate.weight", (a.ffn, a.embd)), (f"blk.{i}.ffn_up.weight", (a.ffn, a.embd)),
                (f"blk.{i}.ffn_down.weight", (a.embd, a.ffn))]
    return out + [("output_norm.weight", (a.embd,)), ("output.weight", (a.vocab, a.embd))]


def write(a) -> None:
    tmp = a.out + ".tmp"
    w = GGUFWriter(tmp, "llama")
    w.add_name("random Llama-3.1-8B-shaped model (benchmarks only)")
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.embd)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_dimension_count(a.embd // a.heads)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(a.vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(a.vocab)])
    w.add_token_scores([0.0] * a.vocab)
    w.add_token_types([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.NORMAL] * (a.vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    specs = tensors(a)
    for name, shape in specs:
        if len(shape) == 1:
            w.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
        else:
            rows, cols = shape
            w.add_tensor_info(name, (rows, cols // QK4_0 * Q4_0_BYTES), np.dtype(np.uint8),
                              rows * cols // QK4_0 * Q4_0_BYTES, raw_dtype=GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    from tqdm import tqdm

    for name, shape in tqdm(specs, desc="writing tensors", file=sys.stderr):
        w.write_tensor_data(np.ones(shape, np.float32) if len(shape) == 1 else q4_0_random(rng, *shape))
    w.close()
    os.replace(tmp, a.out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--embd", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--ctx", type=int, default=131072)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    write(a)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
