#!/usr/bin/env python3
"""Builds side by side on the GPU: ours, the peer fork (issue 14 item 4) and a baseline commit of ours (a change against
what it replaced): the llama-bench JSONL files of scripts/gpu_run.sh's stages "ours", "peer" and "baseline" as one
table of decode tok/s at each depth and prefill 2048 at 32K, each as a ratio to the fastest f16 among the builds at
that depth, with the effective bits per element there (f16 tier included).

    python3 scripts/peer_bench_report.py RESULTS_DIR OUT_PREFIX [--note TEXT]

RESULTS_DIR holds peer-bench-{ours,peer,base}-LABEL.jsonl and gpu.txt; writes OUT_PREFIX.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_peer import PEER_BITS, peer_bits  # noqa: E402

from oscar_gguf import reports  # noqa: E402
from oscar_gguf.kvtypes import effective_bits  # noqa: E402

# label -> (what it is, f16 tier (sinks, window)); the stage's runs (scripts/gpu_run.sh stage_peer)
CONFIGS = {
    "ours-f16": ("ours, f16", (0, 0)), "ours-q4_0": ("ours, q4_0", (0, 0)),
    "ours-oscar2-bare": ("ours, oscar2 bare (no tier, no calibration)", (0, 0)),
    "ours-oscar2": ("ours, oscar2 default (tier 1+128, calibration)", (1, 128)),
    "ours-oscar3-bare": ("ours, oscar3 bare (no tier, no calibration)", (0, 0)),
    "ours-oscar3": ("ours, oscar3 default (tier 1+128, calibration)", (1, 128)),
    "peer-f16": ("peer, f16", (0, 0)), "peer-q4_0": ("peer, q4_0", (0, 0)),
    "peer-turbo2": ("peer, turbo2", (0, 0)), "peer-turbo3": ("peer, turbo3", (0, 0)),
    "peer-turbo4": ("peer, turbo4", (0, 0)),
    "base-f16": ("baseline, f16", (0, 0)), "base-q4_0": ("baseline, q4_0", (0, 0)),
    "base-oscar2-bare": ("baseline, oscar2 bare", (0, 0)),
    "base-oscar2": ("baseline, oscar2 default (tier 1+128, calibration)", (1, 128)),
    "base-oscar3-bare": ("baseline, oscar3 bare", (0, 0)),
    "base-oscar3": ("baseline, oscar3 default (tier 1+128, calibration)", (1, 128)),
}
BUILDS = {"ours": "ours", "peer": "the peer fork", "base": "a baseline commit of ours"}
PREFILL_DEPTH = 32768


def bits(t: str, head_dim: int, ctx: int, tier: tuple[int, int]) -> float:
    if t in PEER_BITS:
        return peer_bits(t, head_dim)
    return effective_bits(t, t, head_dim, head_dim, ctx, *tier)


def load(results: Path) -> dict:
    runs = {}
    for label, (what, tier) in CONFIGS.items():
        f = results / f"peer-bench-{label}.jsonl"
        if not f.exists():
            continue
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        runs[label] = {"what": what, "tier": tier, "type": rows[0]["type_k"], "rows": [
            {k: r[k] for k in ("n_depth", "n_prompt", "n_gen", "avg_ts", "stddev_ts", "n_batch", "n_ubatch",
                               "build_commit", "model_type", "n_gpu_layers")} for r in rows]}
    return runs


def build_report(results: Path, out: Path, head_dim: int, note: str) -> dict:
    runs = load(results)
    machine = (results / "gpu.txt").read_text().strip().splitlines()[-1] if (results / "gpu.txt").exists() else "?"
    depths = sorted({r["n_depth"] for run in runs.values() for r in run["rows"] if r["n_gen"] and r["n_depth"]})

    def ts(label, depth, prefill=False):
        for r in runs.get(label, {}).get("rows", []):
            if r["n_depth"] == depth and bool(r["n_prompt"]) == prefill:
                return r["avg_ts"]
        return None

    anchors = [f"{b}-f16" for b in BUILDS]
    f16 = {d: max(v for v in (ts(a, d) for a in anchors) if v) for d in depths}
    f16_pp = max((v for v in (ts(a, PREFILL_DEPTH, True) for a in anchors) if v), default=None)  # BENCH_PREFILL=0
    table = []
    for label, run in runs.items():
        row = {"label": label, "what": run["what"], "decode": {}, "ratio": {}, "effective_bits": {}}
        for d in depths:
            v = ts(label, d)
            row["decode"][d] = v
            row["ratio"][d] = v / f16[d] if v else None
            row["effective_bits"][d] = bits(run["type"], head_dim, d + 64, run["tier"])
        pp = ts(label, PREFILL_DEPTH, True)
        row["prefill"], row["prefill_ratio"] = pp, (pp / f16_pp if pp and f16_pp else None)
        table.append(row)
    return {"machine": machine, "note": note, "head_dim": head_dim, "depths": depths, "fastest_f16": f16,
            "fastest_f16_prefill": f16_pp, "table": table, "runs": runs,
            "command": f"python3 scripts/peer_bench_report.py {results} {out}"}


def markdown(rep: dict) -> str:
    ds = rep["depths"]
    head = "| cache | " + " | ".join(f"decode @ {d // 1024}K: tok/s (÷ f16) | eff. bits" for d in ds) + \
           f" | prefill 2048 @ {PREFILL_DEPTH // 1024}K: tok/s (÷ f16) |"
    builds = [BUILDS[b] for b in BUILDS if any(r["label"].startswith(b + "-") for r in rep["table"])]
    title = "The peer fork beside ours" if builds == [BUILDS["ours"], BUILDS["peer"]] else \
        "Builds side by side: " + ", ".join(builds)
    lines = [f"# {title}, {rep['machine']}", "", rep["note"], "",
             "Ratios are to the fastest f16 among the builds at that depth (the anchor issue 14 asks for): "
             + ", ".join(f"{d // 1024}K {v:.1f}" for d, v in rep["fastest_f16"].items())
             + (f" tok/s; prefill {rep['fastest_f16_prefill']:.0f} tok/s" if rep["fastest_f16_prefill"] else " tok/s (no prefill run)")
             + ". Effective bits per element at context "
             "depth + 64, the f16 tier included; the peer's types at its own rate (head size 128 is native to its "
             "blocks).", "", head, "|" + "---|" * (1 + 2 * len(ds) + 1)]
    for r in rep["table"]:
        cells = []
        for d in ds:
            v, q = r["decode"][d], r["ratio"][d]
            cells += [f"{v:.1f} ({q:.2f})" if v else "-", f"{r['effective_bits'][d]:.2f}"]
        pp = f"{r['prefill']:.0f} ({r['prefill_ratio']:.2f})" if r["prefill"] else "-"
        lines.append(f"| {r['what']} | " + " | ".join(cells) + f" | {pp} |")
    stages = " and ".join(f"`{b}`" for b in BUILDS if any(r["label"].startswith(b + "-") for r in rep["table"]))
    lines += ["", f"Command: `{rep['command']}` over the results of `scripts/gpu_run.sh` stages {stages}.", ""]
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for r in rep["table"]:
        ds = [d for d in rep["depths"] if r["ratio"][d]]
        ax.plot(ds, [r["ratio"][d] for d in ds], marker="o", ls="-" if r["label"].startswith("ours") else "--",
                label=r["what"])
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context depth (tokens)")
    ax.set_ylabel("decode tok/s ÷ faster f16")
    ax.set_title(f"Llama-3.1-8B-shaped, batch 1 ({rep['machine'].split(',')[0]})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--head-dim", type=int, default=128, help="the benchmark model's head size")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    rep = build_report(a.results, a.out, a.head_dim, a.note)
    for p in reports.write(rep, a.out, markdown, plot):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
