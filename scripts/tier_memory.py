#!/usr/bin/env python3
"""Memory of the f16 tier against the OScaR cache it sits beside, as llama.cpp allocates them, for context lengths
from 1K to 32K (default tier, default model): writes docs/tier-memory-<model>.{json,md,png}.

    .venv/bin/python scripts/tier_memory.py [MODEL]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import llama_cpp  # noqa: F401  (before numpy/matplotlib, see scripts/gpu_cli.py)

from oscar_gguf import load

ROOT = Path(__file__).resolve().parent.parent
CONTEXTS = [1024, 2048, 4096, 8192, 16384, 32768]
TYPES = ["oscar2", "oscar3", "oscar4"]


def main() -> int:
    model = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    rows = []
    for t in TYPES:
        for ctx in CONTEXTS:
            with load(model, kv=t, ctx=ctx, n_batch=512) as m:
                c = m.cache
                rows.append({"type": t, "ctx": ctx, "main_mib": c.k_mib + c.v_mib, "tier_mib": c.tier_mib,
                             "sinks": c.tier_sinks, "window": c.tier_window})
    out = ROOT / "docs" / f"tier-memory-{model}"
    out.with_suffix(".json").write_text(json.dumps({"model": model, "rows": rows,
                                                     "command": f"scripts/tier_memory.py {model}"}, indent=1) + "\n")
    lines = [f"f16 tier (sinks {rows[0]['sinks']}, window {rows[0]['window']}) beside the OScaR cache of `{model}`, "
             "MiB as llama.cpp allocates them (K + V, all layers). Command: `scripts/tier_memory.py "
             f"{model}`.", "", "| type | context | OScaR cache MiB | tier MiB | tier ÷ cache |", "|---|---|---|---|---|"]
    lines += [f"| {r['type']} | {r['ctx']} | {r['main_mib']:.2f} | {r['tier_mib']:.2f} | "
              f"{100 * r['tier_mib'] / r['main_mib']:.1f} % |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for t in TYPES:
        rs = [r for r in rows if r["type"] == t]
        ax.plot([r["ctx"] for r in rs], [100 * r["tier_mib"] / r["main_mib"] for r in rs], "o-", label=t)
    ax.axhline(3, color="gray", ls="--", lw=1, label="target for oscar2 at 32K: 3 %")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("tier memory / OScaR cache memory (%)")
    ax.set_title(f"{model}: f16 tier overhead")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
