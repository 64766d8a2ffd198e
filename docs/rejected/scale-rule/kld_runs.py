#!/usr/bin/env python3
"""llama-perplexity --kl-divergence of one cache against a registry model's f16 base, with the installed build (the
runs of README.md here: apply scale-rule.patch with the rule wanted, ./install.sh, then run this; the base is made
once per model and reused, so every build is measured against the same f16 logits).

    python3 docs/rejected/scale-rule/kld_runs.py TAG "-ctk oscar2 -ctv oscar2 [--oscar-sinks S ...]" [--model gemma3-270m]

writes TAG.log next to this file and prints the KLD.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "scripts"))
from pareto_cpu import parse, prepare, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tag")
    ap.add_argument("cache", help="llama-perplexity cache arguments")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scale-rule"), help="the f16 base and the text, per model")
    a = ap.parse_args()
    ns = argparse.Namespace(model=a.model, text="debian-handbook", ctx=2048, chunks=3)
    work = a.work / a.model
    work.mkdir(parents=True, exist_ok=True)
    model, _, _, text = prepare(ns, work)
    tools, base = Path(sys.executable).parent, work / "base.kld"
    if not base.exists():
        run(tools, model, text, ns.ctx, ns.chunks, 2, "", base, True)
    log = run(tools, model, text, ns.ctx, ns.chunks, 2, a.cache, base, False)
    (HERE / f"{a.tag}.log").write_text(log)
    print(a.tag, parse(log))


if __name__ == "__main__":
    main()
