#!/usr/bin/env python3
"""KL divergence against bits per element, ours beside the peer fork's (issue 15 item 5), on the CPU: one run of
upstream's llama-perplexity --kl-divergence from each build over the same model file, text and chunks; each build's
caches against its own f16 cache.

    python3 scripts/pareto_cpu.py OUT_PREFIX [--model smollm2] [--text debian-handbook] [--ctx 2048] [--chunks 3]

Builds the peer for the CPU first (scripts/build_peer.py) unless --peer-bin is given. The model file is the
registry model's calibrated copy, read by both builds (the peer ignores the oscar.* keys). Writes OUT_PREFIX.json,
.md and .png (KLD against effective bits at ctx, the f16 tier included).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_peer import PEER_BITS, peer_bits  # noqa: E402

from tqdm import tqdm  # noqa: E402

from oscar_gguf import reports  # noqa: E402
from oscar_gguf.corpus import load_corpus  # noqa: E402
from oscar_gguf.ggufmeta import attention_shape  # noqa: E402
from oscar_gguf.kvtypes import effective_bits  # noqa: E402
from oscar_gguf.models import resolve  # noqa: E402

# (build, label, llama-perplexity cache arguments, f16 tier (sinks, window) for the bits)
OURS = [("ours", "q8_0", "-ctk q8_0 -ctv q8_0", (0, 0)), ("ours", "q4_0", "-ctk q4_0 -ctv q4_0", (0, 0))] + [
    ("ours", f"{t}{' bare' if bare else ''}", f"-ctk {t} -ctv {t}" + (" --oscar-sinks 0 --oscar-window 0 --oscar-calib off"
                                                                     if bare else ""), (0, 0) if bare else (1, 128))
    for t in ("oscar4", "oscar3", "oscar2") for bare in (False, True)]
PEER = [("peer", t, f"-ctk {t} -ctv {t}", (0, 0)) for t in ("q8_0", "q4_0", *PEER_BITS)]


def parse(log: str) -> dict:
    def num(pat):
        m = re.search(pat, log)
        return float(m.group(1)) if m else None
    return {"ppl": num(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"), "kld": num(r"Mean\s+KLD:\s+(-?[0-9.]+)"),
            "kld_ci95": num(r"Mean\s+KLD:\s+-?[0-9.]+\s+±\s+([0-9.]+)"), "top1": num(r"Same top p:\s+([0-9.]+)")}


def bits(build: str, label: str, shape, ctx: int, tier) -> float:
    t = label.split()[0]
    if build == "peer" and t in PEER_BITS:  # K and V heads of the model's sizes, each padded to 128
        return (peer_bits(t, shape.head_dim_k) * shape.head_dim_k + peer_bits(t, shape.head_dim_v) * shape.head_dim_v) \
            / (shape.head_dim_k + shape.head_dim_v)
    return effective_bits(t, t, shape.head_dim_k, shape.head_dim_v, ctx, *tier)


def run(bin_dir: Path, model: Path, text: Path, ctx: int, chunks: int, threads: int, args: str, base: Path,
        make_base: bool) -> str:
    cmd = [str(bin_dir / "llama-perplexity"), "-m", str(model), "-f", str(text), "-c", str(ctx), "--chunks", str(chunks),
           "-t", str(threads), "-fa", "on", "--kl-divergence-base", str(base)]
    cmd += [] if make_base else ["--kl-divergence", *args.split()]
    # the folder's own libraries first: a copied build's tools keep their build tree's absolute RUNPATH
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(p for p in (str(bin_dir), os.environ.get("LD_LIBRARY_PATH"))
                                                           if p))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout + r.stderr


def run_options(doc: str, chunks: int) -> argparse.ArgumentParser:
    """The options of a script that runs llama-perplexity over a registry model and a held-out text."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--text", default="debian-handbook")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=chunks)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ours-bin", type=Path, default=Path(sys.executable).parent, help="our llama-perplexity's folder")
    ap.add_argument("--note", default="")
    ap.add_argument("--replot", action="store_true", help="only redraw OUT_PREFIX.md/.png from its .json")
    return ap


def prepare(a: argparse.Namespace, tmp: Path) -> tuple:
    """(model path, its attention shape, the corpus, the text file llama-perplexity reads) for run_options' a."""
    model = resolve(a.model)
    corpus = load_corpus("eval", a.text)
    text = tmp / "text.txt"
    text.write_text(corpus.text[: 40 * a.ctx * a.chunks])  # well over ctx * chunks tokens
    return model, attention_shape(model), corpus, text


def report_head(a: argparse.Namespace, model: Path, corpus, script: str) -> dict:
    return {"model": model.name, "text": f"{a.text} ({corpus.package} {corpus.version}, eval split)", "ctx": a.ctx,
            "chunks": a.chunks, "note": a.note, "command": f"python3 scripts/{script} " + " ".join(sys.argv[1:])}


def updated(old: dict, new: dict) -> dict:
    """old's report with new's rows in place of the rows of the same build and label; new's run listed under
    "updates". Refused when the two runs did not read the same model, text, context and chunks."""
    for k in ("model", "text", "ctx", "chunks"):
        if old[k] != new[k]:
            raise SystemExit(f"--update: the report has {k} {old[k]!r}, this run {new[k]!r}; nothing was written")
    done = {(r["build"], r["label"]) for r in new["rows"]}
    rows = [r for r in old["rows"] if (r["build"], r["label"]) not in done] + new["rows"]
    update = {"rows": sorted(f"{b} {label}" for b, label in done), "note": new["note"], "command": new["command"]}
    return {**old, "rows": rows, "updates": old.get("updates", []) + [update]}


def markdown(rep: dict) -> str:
    lines = [f"# KLD against effective bits, ours and the peer fork's: {rep['model']}, {rep['text']}, ctx {rep['ctx']}",
             "", rep["note"], "",
             "KLD ÷ q4_0 is against our build's q4_0 (upstream's current q4_0, which rotates K and V; the peer's older "
             "upstream does not).", "",
             "| build | cache | effective bits | KLD vs own f16 | ± 95 % | KLD ÷ q4_0 | PPL | same top % |",
             "|---|---|---|---|---|---|---|---|"]
    q4 = next((r["kld"] for r in rep["rows"] if (r["build"], r["label"]) == ("ours", "q4_0")), None)
    for r in sorted(rep["rows"], key=lambda r: (r["build"], -r["bits"])):
        ratio = r["kld"] / q4 if q4 and r["kld"] is not None else float("nan")
        lines.append(f"| {r['build']} | {r['label']} | {r['bits']:.2f} | {r['kld']:.5f} | {r['kld_ci95']:.5f} | "
                     f"{ratio:.2f} | {r['ppl']:.3f} | {r['top1']:.2f} |")
    lines += ["", f"Command: `{rep['command']}`", ""]
    for u in rep.get("updates", []):
        lines += [f"Rerun later ({', '.join(u['rows'])}): {u['note']} Command: `{u['command']}`", ""]
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for build, style in (("ours", "o-"), ("peer", "s--")):
        rows = [r for r in rep["rows"] if r["build"] == build and r["kld"] and r["kld"] > 0]
        ax.plot([r["bits"] for r in rows], [r["kld"] for r in rows], style[0], label=build, ms=6)
        for r in rows:
            ax.annotate(r["label"], (r["bits"], r["kld"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        front, best = [], float("inf")
        for r in sorted(rows, key=lambda r: r["bits"]):  # the front: better than everything at fewer bits
            if r["kld"] < best:
                best = r["kld"]
                front.append(r)
        ax.plot([r["bits"] for r in front], [r["kld"] for r in front], style[1:], lw=1, alpha=0.6,
                color=ax.lines[-1].get_color())
    ax.set_yscale("log")
    ax.set_xlabel(f"effective bits per K/V element at ctx {rep['ctx']} (f16 tier included)")
    ax.set_ylabel("mean KLD vs the build's own f16 cache")
    ax.set_title(f"{rep['model'].split('.')[0]}, {rep['text'].split(' (')[0]}, CPU, llama-perplexity, "
                 f"{rep['chunks']} chunks", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = run_options(__doc__, chunks=3)
    ap.add_argument("--peer-bin", type=Path, help="the peer's tools (default: build them)")
    ap.add_argument("--only", help="comma-separated cache labels to run (default: all), e.g. 'q4_0,oscar2,turbo2'")
    ap.add_argument("--update", action="store_true",
                    help="with --only: rerun those rows into OUT_PREFIX's report and keep its other rows (same model, "
                         "text, ctx and chunks); the report lists each update's command and note")
    a = ap.parse_args()
    if a.update and not (a.only and a.out.with_suffix(".json").exists()):
        ap.error("--update reruns the rows --only names into an existing report")
    if a.replot:
        for p in reports.redraw(a.out, markdown, plot):
            print(p)
        return 0
    only = set(a.only.split(",")) if a.only else None
    peer_bin = a.peer_bin or Path(subprocess.run([sys.executable, str(ROOT / "scripts" / "build_peer.py")], check=True,
                                                 capture_output=True, text=True).stdout.strip().splitlines()[-1])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, shape, corpus, text = prepare(a, Path(tmp))
        picked = [j for j in [*OURS, *PEER] if only is None or j[1] in only]
        builds = {j[0] for j in picked}  # each build's f16 is the base of its rows
        jobs = [j for j in [("ours", "f16", "", (0, 0)), *OURS, ("peer", "f16", "", (0, 0)), *PEER]
                if j in picked or (j[1] == "f16" and j[0] in builds)]
        for build, label, args, tier in tqdm(jobs, desc="llama-perplexity runs", unit="run"):
            bin_dir = a.ours_bin if build == "ours" else peer_bin
            base = Path(tmp) / f"{build}-f16.kld"
            if label == "f16":
                run(bin_dir, model, text, a.ctx, a.chunks, a.threads, "", base, True)
                continue
            log = run(bin_dir, model, text, a.ctx, a.chunks, a.threads, args, base, False)
            rows.append({"build": build, "label": label, "args": args, "bits": bits(build, label, shape, a.ctx, tier),
                         **parse(log)})
    rep = {**report_head(a, model, corpus, "pareto_cpu.py"), "head_dim_k": shape.head_dim_k,
           "head_dim_v": shape.head_dim_v, "rows": rows}
    if a.update:
        rep = updated(json.loads(a.out.with_suffix(".json").read_text()), rep)
    for p in reports.write(rep, a.out, markdown, plot):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
