"""Decode speed at context depth, prefill speed at depth and KV buffer sizes, cache types side by side in one run.

For every depth and type: fill the cache with `depth` tokens (extending the previous depth's cache), then
time `n_decode` single-token decode steps (batch 1, like generation), dropping them again between repeats.
With `prefill=(depth, n)`, an n-token prompt is also timed on top of `depth` cached tokens (llama-bench's
`-p n -d depth`). By default all types are loaded at once and interleaved per depth, so machine drift hits
all of them alike; `sequential` loads one type at a time (large models on one GPU).
On CUDA, `attention=True` adds the flash-attention kernel's time for one decode step at 128K context
(test-backend-ops perf cases from patches/0003) and the GPU's measured copy bandwidth.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .kvtypes import KV_TYPES, effective_bits, kv_type, variants

ATTN_KV = 131072  # the perf cases: D 128, 8 KV heads, GQA 4 (a Llama-3.1-8B layer), this many cached tokens
COPY_CASE = r"ne_src=\[8192,8192,8,1\]"  # the perf case of a 1 GiB f16 copy (test-backend-ops -p is a regex)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


def expected_kv_bytes(shape, cells: int, layers: int, name: str) -> tuple[int, int]:
    t = kv_type(name)
    per_k = cells * shape.n_head_kv * shape.head_dim_k
    per_v = cells * shape.n_head_kv * shape.head_dim_v
    return layers * per_k * t.block_bytes // t.block_size, layers * per_v * t.block_bytes // t.block_size


class _Timer:
    """One loaded model: extends its cache to a depth, times decode steps and prompts on top of it."""

    def __init__(self, model, prompt: list[int], decode_ids: list[int]):
        self.model, self.llm, self.prompt, self.decode_ids, self.filled = model, model.llm, prompt, decode_ids, 0

    def fill(self, depth: int) -> None:  # eval first drops cells at positions >= n_tokens
        self.llm.n_tokens = self.filled
        self.llm.eval(self.prompt[self.filled:depth])
        self.filled = depth

    def decode(self, depth: int) -> float:
        self.llm.n_tokens = depth
        start = time.perf_counter()
        for tok in self.decode_ids:
            self.llm.eval([tok])
        return len(self.decode_ids) / (time.perf_counter() - start)

    def prefill(self, depth: int, n: int) -> float:
        self.llm.n_tokens = depth
        start = time.perf_counter()
        self.llm.eval(self.prompt[depth:depth + n])
        rate = n / (time.perf_counter() - start)
        self.filled = depth + n
        return rate


def run(model: str, kv_types: list[str], depths: list[int], n_decode: int = 32, repeats: int = 3,
        threads: int | None = None, n_gpu_layers: int = 0, prefill: tuple[int, int] | None = None,
        random_tokens: bool = False, sequential: bool = False, n_batch: int = 512, attention: bool = False,
        tiers: list[tuple[int, int]] | None = None, calib: str = "on") -> dict:
    from tqdm import tqdm

    from .chat import OscarModel

    plan = variants(kv_types, tiers, calib)
    types = list(plan)
    depths = sorted(depths)
    longest = max(depths + ([sum(prefill)] if prefill else []))
    ctx = longest + n_decode + 1
    threads = threads or os.cpu_count()

    def load(label: str):
        v = plan[label]
        return OscarModel(model, kv=v.kv, ctx=ctx, n_threads=threads, n_threads_batch=threads,
                          n_gpu_layers=n_gpu_layers, n_batch=n_batch, sinks=v.sinks, window=v.window, calib=v.calib)

    # before any model takes GPU memory
    attn = attention_perf(list(dict.fromkeys(v.kv for v in plan.values()))) if attention else None
    first = load(types[0])
    if random_tokens:  # models with a placeholder vocabulary (scripts/make_bench_model.py)
        prompt = np.random.default_rng(0).integers(3, first.llm.n_vocab(), size=longest).tolist()
    else:
        from .corpus import load_corpus

        prompt = first.llm.tokenize(load_corpus("eval").text.encode(), add_bos=True)[:longest]
        if len(prompt) < longest:
            raise ValueError(f"the evaluation text has {len(prompt)} tokens, fewer than the {longest} needed")
    decode_ids = prompt[1:n_decode + 1]
    rates = {t: {d: [] for d in depths} for t in types}
    prefill_rates: dict[str, list[float]] = {t: [] for t in types}
    info: dict[str, dict] = {}

    def prefill_runs(tm: _Timer, t: str) -> None:
        d, n = prefill
        tm.fill(d)
        for _ in range(repeats):
            prefill_rates[t].append(tm.prefill(d, n))

    steps = len(types) * (len(depths) * (1 + repeats) + (1 if prefill else 0))
    with tqdm(total=steps, desc="prefill + decode timing", file=sys.stderr) as bar:
        if sequential:
            for t in types:
                m = first if t == types[0] else load(t)
                tm = _Timer(m, prompt, decode_ids)
                for d in depths:
                    if prefill and prefill[0] <= d and not prefill_rates[t]:
                        prefill_runs(tm, t)
                        bar.update(1)
                    tm.fill(d)
                    bar.update(1)
                    for _ in range(repeats):
                        rates[t][d].append(tm.decode(d))
                        bar.update(1)
                if prefill and not prefill_rates[t]:
                    prefill_runs(tm, t)
                    bar.update(1)
                info[t] = _cache_info(m, plan[t].kv, depths)
                m.close()
        else:
            models = {t: first if t == types[0] else load(t) for t in types}
            timers = {t: _Timer(m, prompt, decode_ids) for t, m in models.items()}
            for d in depths:
                for t in types:
                    timers[t].fill(d)
                    bar.update(1)
                for _ in range(repeats):
                    for t in types:
                        rates[t][d].append(timers[t].decode(d))
                        bar.update(1)
            if prefill:
                for t in types:
                    prefill_runs(timers[t], t)
                    bar.update(1)
            for t, m in models.items():
                info[t] = _cache_info(m, plan[t].kv, depths)
                m.close()
    results = {}
    for t in types:
        results[t] = {"bits_per_element": kv_type(plan[t].kv).bits_per_element,
                      "decode_tok_s": {str(d): float(np.median(r)) for d, r in rates[t].items()},
                      "decode_tok_s_all": {str(d): r for d, r in rates[t].items()}, **info[t]}
        if prefill:
            results[t]["prefill_tok_s"] = float(np.median(prefill_rates[t]))
            results[t]["prefill_tok_s_all"] = prefill_rates[t]
    gpu = gpu_name() if n_gpu_layers else None
    report = {"model": str(model), "model_file": first.path.name,
              "machine": gpu or f"{cpu_name()}, {threads} threads", "gpu_layers": n_gpu_layers, "ctx": ctx,
              "n_decode": n_decode, "repeats": repeats, "depths": depths, "n_batch": n_batch,
              "sequential": sequential, "tokens": "random ids" if random_tokens else "prose", "results": results}
    if prefill:
        report["prefill"] = {"depth": prefill[0], "tokens": prefill[1]}
    if attn:
        report["attention"] = attn
    return report


def _cache_info(m, t: str, depths: list[int]) -> dict:
    caches = m.cache.caches
    exp_k = exp_v = 0
    for c in caches:
        ek, ev = expected_kv_bytes(m.shape, c.cells, c.layers, t)
        exp_k, exp_v = exp_k + ek, exp_v + ev
    layers = sum(c.layers for c in caches)
    at_k, at_v = expected_kv_bytes(m.shape, ATTN_KV, layers, t)
    eff = {str(d): effective_bits(m.cache.type_k, m.cache.type_v, m.shape.head_dim_k, m.shape.head_dim_v, d,
                                  m.cache.tier_sinks, m.cache.tier_window) for d in depths if d > 0}
    return {"kv_cells": sum(c.cells for c in caches), "layers": layers,
            "tier_sinks": m.cache.tier_sinks, "tier_window": m.cache.tier_window, "tier_mib": m.cache.tier_mib,
            "k_mib_reported": sum(c.k_mib for c in caches), "v_mib_reported": sum(c.v_mib for c in caches),
            "k_mib_expected": exp_k / 2 ** 20, "v_mib_expected": exp_v / 2 ** 20,
            "kv_mib_at_128k": (at_k + at_v) / 2 ** 20, "effective_bits": eff}


def attention_perf(types: list[str]) -> dict:
    """Flash-attention time of one decode step of one layer at 128K context per type, and the GPU's copy
    bandwidth, from test-backend-ops perf (the cases patches/0003 adds)."""
    from .info import build_stamp

    exe = Path(build_stamp()["build_dir"]) / "bin" / "test-backend-ops"

    def perf(op: str, pattern: str) -> list[str]:
        r = subprocess.run([str(exe), "perf", "-b", "CUDA0", "-o", op, "-p", pattern],
                           capture_output=True, text=True, timeout=900)
        return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in r.stdout.splitlines()]

    copy = [float(m[1]) for line in perf("CPY", COPY_CASE) if (m := re.search(r"([\d.]+) GB/s", line))]
    out = {"command": f"test-backend-ops perf -b CUDA0 -o FLASH_ATTN_EXT -p kv={ATTN_KV}",
           "bandwidth_command": f"test-backend-ops perf -b CUDA0 -o CPY -p '{COPY_CASE}'",
           "bandwidth_gb_s": copy[0] if copy else None, "per_type": {}}
    lines = perf("FLASH_ATTN_EXT", f"kv={ATTN_KV}")
    for line in lines:
        m = re.search(rf"nh=8,.*kv={ATTN_KV},nb=1,.*type_K=(\w+),type_V=\1,.*\s([\d.]+) us/run", line)
        if m and m[1] in types:
            t = kv_type(m[1])
            kv_bytes = 2 * ATTN_KV * 8 * 128 * t.block_bytes // t.block_size  # K and V of one layer
            us = float(m[2])
            out["per_type"][m[1]] = {"us_per_layer": us, "kv_bytes_per_layer": kv_bytes, "gb_s": kv_bytes / us / 1e3}
    if not out["per_type"]:
        raise RuntimeError(f"no FLASH_ATTN_EXT perf lines from {exe}: {' '.join(lines[-5:])}")
    return out


def markdown(report: dict) -> str:
    depths = report["depths"]
    res = report["results"]
    pre = report.get("prefill")
    lines = [f"Model `{report['model_file']}`, {report['machine']}, batch 1 decode, median of {report['repeats']} "
             f"runs of {report['n_decode']} tokens; KV cache of {report['ctx']} tokens"
             + (f", all layers on the GPU" if report.get("gpu_layers") else "") + ". Effective bits: the main "
             "cache plus the f16 tier's rows at each depth (DESIGN.md section 5).", "",
             "| KV type | bits/element | " + " | ".join(f"effective bits @ {d}" for d in depths) + " | "
             + " | ".join(f"tok/s @ {d}" for d in depths)
             + (f" | prefill {pre['tokens']} @ {pre['depth']} tok/s" if pre else "")
             + " | K MiB (llama.cpp) | K MiB (bits × elements) | V MiB (llama.cpp) | V MiB (bits × elements) |"
             + " KV MiB @ 128K | f16 tier MiB |",
             "|---|---|" + "---|" * (2 * len(depths)) + ("---|" if pre else "") + "---|---|---|---|---|---|"]
    for t, r in res.items():
        speeds = " | ".join(f"{r['decode_tok_s'][str(d)]:.1f}" for d in depths)
        p = f" {r['prefill_tok_s']:.0f} |" if pre else ""
        effs = []
        for d in depths:
            eff = r.get("effective_bits", {}).get(str(d))
            if d == 0:  # an empty cache: no bits per element to speak of
                effs.append("-")
                continue
            if eff is None:  # reports older than the column: the label's type, K and V heads of one size
                kv = t.split(" ")[0] if t.split(" ")[0] in KV_TYPES else "f16"
                eff = effective_bits(kv, kv, 1, 1, d, r.get("tier_sinks", 0), r.get("tier_window", 0))
            effs.append(f"{eff:.2f}")
        lines.append(f"| {t} | {r['bits_per_element']:.2f} | {' | '.join(effs)} | {speeds} |{p} {r['k_mib_reported']:.2f} | "
                     f"{r['k_mib_expected']:.2f} | {r['v_mib_reported']:.2f} | {r['v_mib_expected']:.2f} | "
                     f"{r.get('kv_mib_at_128k', float('nan')):.0f} | {r.get('tier_mib', 0.0):.2f} |")
    no_tier = [t for t in res if t.endswith(" s0w0")]  # each OScaR type against itself without the f16 tier
    for base in ["f16", "q4_0"] + no_tier:
        if base not in res:
            continue
        rows = [t for t in res if t.split(" ")[0] == base.split(" ")[0]] if base in no_tier else list(res)
        lines += ["", f"Relative to {base} (same run):", "",
                  "| KV type | " + " | ".join(f"decode @ {d}" for d in depths) + (" | prefill |" if pre else " |"),
                  "|---|" + "---|" * (len(depths) + (1 if pre else 0))]
        for t in rows:
            r = res[t]
            cells = [f"{r['decode_tok_s'][str(d)] / res[base]['decode_tok_s'][str(d)]:.2f}" for d in depths]
            if pre:
                cells.append(f"{r['prefill_tok_s'] / res[base]['prefill_tok_s']:.2f}")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    pairs = [(t.removesuffix(" +cal"), t) for t in res if t.endswith(" +cal") and t.removesuffix(" +cal") in res]
    if pairs:  # the calibration's transform against the same variant without it
        lines += ["", "Calibrated ÷ uncalibrated (same run):", "",
                  "| KV type | " + " | ".join(f"decode @ {d}" for d in depths) + (" | prefill |" if pre else " |"),
                  "|---|" + "---|" * (len(depths) + (1 if pre else 0))]
        for base, t in pairs:
            cells = [f"{res[t]['decode_tok_s'][str(d)] / res[base]['decode_tok_s'][str(d)]:.2f}" for d in depths]
            if pre:
                cells.append(f"{res[t]['prefill_tok_s'] / res[base]['prefill_tok_s']:.2f}")
            lines.append(f"| {base} | " + " | ".join(cells) + " |")
    att = report.get("attention")
    if att:
        bw = att["bandwidth_gb_s"]
        ref, ref_name = (bw, "of copy bandwidth") if bw else (att["per_type"].get("f16", {}).get("gb_s"), "of f16's rate")
        layers = next(iter(res.values()))["layers"]
        lines += ["", f"Flash-attention kernel, one decode step of one layer at {ATTN_KV} cached tokens "
                  f"(D 128, 8 KV heads, GQA 4): `{att['command']}`. "
                  + (f"Measured copy bandwidth {bw:.0f} GB/s (bytes read + written; `{att['bandwidth_command']}`)."
                     if bw else "The copy bandwidth was not measured in this run; the last column compares with "
                     "the f16 kernel's own K/V read rate instead."), "",
                  f"| KV type | µs per layer | × {layers} layers (ms per token) | K+V bytes per layer (MB) | GB/s | "
                  f"{ref_name} |", "|---|---|---|---|---|---|"]
        for t, a in att["per_type"].items():
            frac = f"{100 * a['gb_s'] / ref:.0f} %" if ref else "-"
            lines.append(f"| {t} | {a['us_per_layer']:.0f} | {a['us_per_layer'] * layers / 1e3:.2f} | "
                         f"{a['kv_bytes_per_layer'] / 1e6:.1f} | {a['gb_s']:.0f} | {frac} |")
    if "command" in report:
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for t, r in report["results"].items():
        ax.plot(report["depths"], [r["decode_tok_s"][str(d)] for d in report["depths"]], marker="o", label=t)
    if max(report["depths"]) > 16 * max(1, min(d for d in report["depths"] if d > 0)):
        ax.set_xscale("symlog", linthresh=min(d for d in report["depths"] if d > 0))
    ax.set_xlabel("context depth (tokens)")
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f"{report['model_file']} on {report['machine']}", fontsize=8)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
