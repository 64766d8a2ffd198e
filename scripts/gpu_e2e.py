#!/usr/bin/env python3
"""End to end on the GPU: greedy tokens with full offload against the CPU path, and the eval against the CPU eval.

Greedy: for each cache type, the same prompts are decoded greedily in a CPU-only process (CUDA hidden) and
with every layer on the GPU; the report gives the first step where the tokens differ and, there, the gap
between the CPU's two best logits (a small gap means a near tie that rounding can flip).
Eval: `oscar-gguf eval` with --gpu-layers -1 on the same chunks as docs/eval-smollm2-ctx2048.json, and
each type's KLD as a ratio to the CPU one.

    python3 scripts/gpu_e2e.py MODEL.gguf OUTDIR
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# llama_cpp before numpy on the GPU image: see scripts/gpu_cli.py
import llama_cpp  # (first on purpose)
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TYPES = ["f16", "q8_0", "q4_0", "oscar4", "oscar3", "oscar2"]
N_GREEDY = 48
CPU_EVAL = ROOT / "docs" / "eval-smollm2-ctx2048.json"


def greedy(model: str, n_gpu_layers: int) -> dict:
    """{type: {prompt: {"tokens": [...], "gaps": [...]}}} decoded in this process."""
    from oscar_gguf import load
    from oscar_gguf.corpus import load_corpus

    prose = load_corpus("eval").text
    out: dict = {}
    for t in TYPES:
        with load(model, kv=t, ctx=2048, n_gpu_layers=n_gpu_layers) as m:
            llm = m.llm
            prompts = {
                "chat": llm.tokenize(b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                                     b"<|im_start|>assistant\n", add_bos=False, special=True),
                "prose-1500": llm.tokenize(prose.encode(), add_bos=True)[:1500],
            }
            out[t] = {}
            for name, tokens in prompts.items():
                llm.reset()
                llm.eval(tokens)
                toks, gaps = [], []
                for _ in range(N_GREEDY):
                    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
                    logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()
                    top2 = np.argsort(logits)[-2:]
                    toks.append(int(top2[1]))
                    gaps.append(float(logits[top2[1]] - logits[top2[0]]))
                    llm.eval([toks[-1]])
                out[t][name] = {"tokens": toks, "gaps": gaps, "text": llm.detokenize(toks).decode(errors="replace")}
    return out


def compare_greedy(cpu: dict, gpu: dict) -> list[dict]:
    rows = []
    for t in TYPES:
        for name in cpu[t]:
            c, g = cpu[t][name]["tokens"], gpu[t][name]["tokens"]
            first = next((i for i, (a, b) in enumerate(zip(c, g)) if a != b), None)
            rows.append({"type": t, "prompt": name, "same": first is None, "first_difference": first,
                         "cpu_gap_there": None if first is None else cpu[t][name]["gaps"][first],
                         "cpu_text": cpu[t][name]["text"], "gpu_text": gpu[t][name]["text"]})
    return rows


def main() -> int:
    model, outdir = sys.argv[1], Path(sys.argv[2])
    if len(sys.argv) > 3:  # child: greedy decode on one device, JSON to stdout
        print(json.dumps(greedy(model, int(sys.argv[3]))))
        return 0
    outdir.mkdir(parents=True, exist_ok=True)

    def child(gpu_layers: int, env: dict) -> dict:
        r = subprocess.run([sys.executable, __file__, model, str(outdir), str(gpu_layers)], env=env,
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"greedy run (gpu_layers={gpu_layers}) failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    cpu = child(0, dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    gpu = child(-1, dict(os.environ))
    rows = compare_greedy(cpu, gpu)
    (outdir / "greedy.json").write_text(json.dumps({"cpu": cpu, "gpu": gpu, "rows": rows}, indent=1) + "\n")

    def evaluate(out: Path, types: str, env: dict) -> dict:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_cli.py"), "eval", "--model", model,
                        "--gpu-layers", "-1", "--kv", types,
                        "--min-chunks", "4", "--max-chunks", "4", "--no-plot", "--out", str(out)], check=True, env=env)
        return json.loads(out.with_suffix(".json").read_text())["results"]

    ev = outdir / "eval-smollm2-ctx2048-cuda"
    gpu_eval = evaluate(ev, ",".join(TYPES), dict(os.environ))
    # llama.cpp's own Hadamard rotation of Q/K/V for quantized caches, switched off, to locate the GPU's
    # extra error in the graph (it shows up for upstream q8_0 too)
    norot = evaluate(outdir / "eval-smollm2-ctx2048-cuda-norot", "f16,q8_0,q4_0",
                     dict(os.environ, LLAMA_ATTN_ROT_DISABLE="1"))
    cpu_eval = json.loads(CPU_EVAL.read_text())["results"]
    ratios = {t: gpu_eval[t]["kld"] / cpu_eval[t]["kld"] for t in TYPES if t != "f16"}
    report = {"greedy": rows, "eval_ratio_gpu_over_cpu": ratios,
              "eval_gpu": {t: gpu_eval[t] for t in TYPES}, "eval_cpu": {t: cpu_eval[t] for t in TYPES},
              "eval_gpu_rotation_off": norot}
    (outdir / "e2e.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["Greedy decoding, 48 tokens, same cache type on the CPU (CUDA hidden) and with all layers on the GPU:", "",
             "| KV type | prompt | same tokens | first difference at step | CPU top-2 logit gap there |",
             "|---|---|---|---|---|"]
    for r in rows:
        gap = "-" if r["cpu_gap_there"] is None else f"{r['cpu_gap_there']:.3f}"
        lines.append(f"| {r['type']} | {r['prompt']} | {'yes' if r['same'] else 'no'} | "
                     f"{'-' if r['first_difference'] is None else r['first_difference']} | {gap} |")
    lines += ["", "Eval (same 4 chunks of 2048 tokens as the CPU run in docs/eval-smollm2-ctx2048.md):", "",
              "| KV type | KLD CPU | KLD GPU | GPU ÷ CPU | PPL CPU | PPL GPU |", "|---|---|---|---|---|---|"]
    for t in TYPES[1:]:
        lines.append(f"| {t} | {cpu_eval[t]['kld']:.5f} | {gpu_eval[t]['kld']:.5f} | {ratios[t]:.3f} | "
                     f"{cpu_eval[t]['ppl']:.3f} | {gpu_eval[t]['ppl']:.3f} |")
    lines += ["", "GPU with llama.cpp's K/V rotation switched off (LLAMA_ATTN_ROT_DISABLE=1): "
              + ", ".join(f"{t} KLD {r['kld']:.5f}" for t, r in norot.items() if t != "f16")]
    (outdir / "e2e.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
