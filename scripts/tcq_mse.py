#!/usr/bin/env python3
"""Issue 15, item 1, before any C: how close does a bitshift-trellis 2-bit code (tests/tcq_ref.py) come to the
rate-distortion bound on Gaussian blocks, against the scalar Lloyd-Max code oscar2 used before it? --step 3 asks
the same of a 3-bit trellis (windows at bit 3j) against oscar3's scalar 3-bit code.

    python3 scripts/tcq_mse.py OUT_PREFIX [--states 6,8,10] [--seeds 3] [--step 2]

For each window length L: the codebook trained by tcq_ref.train_codebook, then on fresh seeded blocks of 64
standard Gaussians: the code's MSE at unit scale (comparable to Lloyd-Max's 0.1175 and the bound 2^-4 = 0.0625 at
2 bits), the exact circular optimum against the two-pass encoder, and the block's relative error under oscar2's
scale rule (the block's norm kept, fp16 scale: step + 0.25 bits per element). Writes OUT_PREFIX.json/.md/.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import numpy_ref  # noqa: E402
import tcq_ref  # noqa: E402
from oscar_gguf import reports  # noqa: E402
from oscar_gguf.codebook import distortion, lloyd_max  # noqa: E402

def norm_kept(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """oscar2's scale rule applied to decoded unit-RMS codes y of blocks x: the decoded block keeps x's norm,
    through an fp16 scale."""
    s = (np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).astype(np.float16).astype(np.float64)
    return y * s[:, None]


def measure(L: int, seed: int, blocks: int, exact: bool, step: int) -> dict:
    t0 = time.time()
    cb = tcq_ref.train_codebook(L, seed=seed, step=step)
    train_s = time.time() - t0
    x = np.random.default_rng(1000 + seed).standard_normal((blocks, tcq_ref.BLOCK))
    st = tcq_ref.encode(x, cb, step=step)
    y = tcq_ref.decode(tcq_ref.stream(st, L, step), cb, step)
    u = x * (8.0 / np.linalg.norm(x, axis=1))[:, None]  # unit RMS, as oscar2 codes a block
    yu = tcq_ref.decode(tcq_ref.stream(tcq_ref.encode(u, cb, step=step), L, step), cb, step)
    r = {"L": L, "seed": seed, "mse_unit": float(((x - y) ** 2).mean()),
         "rel_block": float(((x - norm_kept(x, yu)) ** 2).sum() / (x ** 2).sum()), "train_s": round(train_s, 1)}
    if exact:
        ye = tcq_ref.decode(tcq_ref.stream(tcq_ref.encode(x, cb, exact=True, step=step), L, step), cb, step)
        r["mse_unit_exact"] = float(((x - ye) ** 2).mean())
    return r


def scalar(seed: int, blocks: int, step: int) -> dict:
    x = np.random.default_rng(1000 + seed).standard_normal((blocks, tcq_ref.BLOCK)).astype(np.float32)
    lv = np.array(lloyd_max(step))
    thr = (lv[:-1] + lv[1:]) / 2
    y = lv[(x[..., None] > thr).sum(-1)]
    dec = numpy_ref.decode(numpy_ref.pack(*numpy_ref.encode(x, step), step), step).reshape(x.shape)
    return {"mse_unit": float(((x - y) ** 2).mean()), "rel_block": float(((x - dec) ** 2).sum() / (x.astype(np.float64) ** 2).sum())}


def markdown(rep: dict) -> str:
    lm = rep["lloyd_max"]
    step, bound = rep.get("step", 2), rep["bound"]
    lines = [f"Gaussian blocks of 64 (N(0,1), {rep['blocks']} per seed, {rep['seeds']} seeds; codebooks trained on other "
             f"seeded blocks: tests/tcq_ref.py train_codebook). MSE at unit scale against the {step}-bit "
             f"rate-distortion bound {bound:.4f} and the scalar Lloyd-Max code ({lm['theory']:.4f} in theory); "
             f"'block' is the relative error with the OScaR scale rule (norm kept, fp16 scale, {step + 0.25:.2f} bits "
             "per element). Mean over seeds, the spread (max - min) in brackets.", "",
             "| code | states | MSE, unit scale | dB above the bound | exact circular optimum | block rel. error | "
             "vs Lloyd-Max (block) | table bytes (fp16) |", "|---|---|---|---|---|---|---|---|"]

    def row(name, states, runs, table):
        m = np.array([r["mse_unit"] for r in runs])
        b = np.array([r["rel_block"] for r in runs])
        ex = [r["mse_unit_exact"] for r in runs if "mse_unit_exact" in r]
        exs = f"{np.mean(ex):.4f}" if ex else "-"
        ratio = b.mean() / np.mean([r["rel_block"] for r in lm["runs"]])
        return (f"| {name} | {states} | {m.mean():.4f} ({m.max() - m.min():.4f}) | {10 * np.log10(m.mean() / bound):.2f} | "
                f"{exs} | {b.mean():.4f} ({b.max() - b.min():.4f}) | {ratio:.3f} | {table} |")

    lines.append(row("scalar Lloyd-Max (oscar2 before the trellis)" if step == 2 else f"scalar Lloyd-Max (oscar{step})",
                     "-", lm["runs"], 2 << step))
    for L, runs in rep["trellis"].items():
        lines.append(row(f"bitshift trellis, L = {L}", 2 ** int(L), runs, 2 * 2 ** int(L)))
    lines += ["", f"Command: `{rep['command']}`"]
    return "\n".join(lines) + "\n"


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    Ls = [int(L) for L in rep["trellis"]]
    m = [np.mean([r["mse_unit"] for r in rep["trellis"][str(L)]]) for L in Ls]
    step = rep.get("step", 2)
    ax.plot(Ls, m, "o-", label=f"bitshift trellis ({step} bits/element)")
    ax.axhline(np.mean([r["mse_unit"] for r in rep["lloyd_max"]["runs"]]), color="C1", ls="--", label="scalar Lloyd-Max")
    ax.axhline(rep["bound"], color="k", ls=":", label="rate-distortion bound")
    ax.set_xlabel("window bits L (2^L states)")
    ax.set_ylabel("MSE on N(0,1), unit scale")
    ax.set_title(f"{step}-bit codes for Gaussian blocks of 64")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--states", default="6,8,10")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=1000)
    ap.add_argument("--exact-up-to", type=int, default=8, help="also run the exact encoder for L up to this")
    ap.add_argument("--step", type=int, default=2, help="bits per element (windows start at bit step x j)")
    a = ap.parse_args()
    from tqdm import tqdm

    Ls = [int(s) for s in a.states.split(",")]
    rep = {"blocks": a.blocks, "seeds": a.seeds, "step": a.step, "bound": 2.0 ** (-2 * a.step),
           "lloyd_max": {"theory": distortion(lloyd_max(a.step)),
                         "runs": [scalar(s, a.blocks, a.step) for s in range(a.seeds)]},
           "trellis": {}, "command": f"python3 scripts/tcq_mse.py OUT --states {a.states} --seeds {a.seeds} "
                                     f"--blocks {a.blocks} --exact-up-to {a.exact_up_to} --step {a.step}"}
    with tqdm(total=len(Ls) * a.seeds, desc="codebooks", file=sys.stderr) as bar:
        for L in Ls:
            rep["trellis"][str(L)] = []
            for s in range(a.seeds):
                rep["trellis"][str(L)].append(measure(L, s, a.blocks, L <= a.exact_up_to, a.step))
                bar.update(1)
    reports.write(rep, Path(a.out), markdown, plot)  # atomic json/md/png, like oscar-gguf eval's
    print(markdown(rep))


if __name__ == "__main__":
    main()
