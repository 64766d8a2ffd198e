"""oscar-gguf command line: info, models, chat, eval, bench, calibrate."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .kvtypes import CALIB_CHOICES, KV_TYPES, kv_type
from .corpus import DEFAULT_TEXT, TEXTS
from .models import DEFAULT_MODEL


def _types(s: str) -> list[str]:
    return [kv_type(t.strip()).name for t in s.split(",") if t.strip()]


def _tiers(s: str | None) -> list[tuple[int, int]] | None:
    """'S:W,S:W' -> [(S, W), ...] (sinks, window of the f16 tier)."""
    if not s:
        return None
    out = []
    for part in s.split(","):
        sinks, sep, window = part.strip().partition(":")
        if not sep or not sinks.isdigit() or not window.isdigit():
            raise ValueError(f"tier {part.strip()!r} is not SINKS:WINDOW (two non-negative integers)")
        out.append((int(sinks), int(window)))
    return out


def cmd_info(a) -> int:
    from .info import report

    print(report())
    return 0


def cmd_models(a) -> int:
    from .models import list_models

    for m in list_models():
        print(f"{m.name:14s} {'(default) ' if m.name == DEFAULT_MODEL else ''}{m.description}")
    return 0


def _calib_note(m) -> str:
    if m.cache.calibrated:
        return ", calibrated"
    if m.calibration is None and (kv_type(m.cache.type_k).oscar_bits or kv_type(m.cache.type_v).oscar_bits):
        return ", uncalibrated: `oscar-gguf calibrate` adds a calibration"
    return ""


def cmd_chat(a) -> int:
    from .chat import load

    m = load(a.model, kv=a.kv, ctx=a.ctx, kv_k=a.kv_k, kv_v=a.kv_v, n_gpu_layers=a.gpu_layers, verbose=a.verbose,
             sinks=a.sinks, window=a.window, calib=None if a.calib is None else a.calib == "on")
    tier = f", f16 tier {m.cache.tier_sinks}+{m.cache.tier_window} tokens" if m.cache.tier_mib else ""
    print(f"[{m.path.name}: KV cache K={m.cache.type_k} V={m.cache.type_v}, "
          f"{m.cache.k_mib + m.cache.v_mib + m.cache.tier_mib:.2f} MiB for {a.ctx} tokens{tier}{_calib_note(m)}]",
          file=sys.stderr)
    messages = [{"role": "system", "content": a.system}] if a.system else []
    sampling = dict(max_tokens=a.max_tokens, temperature=a.temperature, seed=a.seed)

    def answer() -> str:
        parts = []
        for chunk in m.chat(messages, stream=True, **sampling):
            piece = chunk["choices"][0]["delta"].get("content") or ""
            parts.append(piece)
            print(piece, end="", flush=True)
        print()
        return "".join(parts)

    if a.prompt is not None:
        messages.append({"role": "user", "content": a.prompt})
        answer()
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("Chat with the model; an empty line or Ctrl-D ends.", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        messages.append({"role": "assistant", "content": answer()})
    return 0


def publish(report: dict, out: Path, kind, argv: list[str], plot: bool = True) -> int:
    """Record the command line (with LLAMA_CPP_LIB_PATH when another build ran), write .json/.md/.png (the plot can
    be drawn later with render), print the table."""
    import shlex

    from . import reports

    lib = os.environ.get("LLAMA_CPP_LIB_PATH")
    report["command"] = (f"LLAMA_CPP_LIB_PATH={shlex.quote(lib)} " if lib else "") + shlex.join(["oscar-gguf", *argv])
    for p in reports.write(report, out, kind.markdown, kind.plot if plot else None):
        print(f"wrote {p}", file=sys.stderr)
    print(kind.markdown(report))
    return 0


def cmd_eval(a) -> int:
    from . import evaluate

    report = evaluate.run(a.model, _types(a.kv), a.ctx, max_chunks=a.max_chunks, min_chunks=a.min_chunks,
                          threads=a.threads, n_gpu_layers=a.gpu_layers, tiers=_tiers(a.tiers), calib=a.calib, text=a.text)
    return publish(report, Path(a.out or f"eval-{Path(str(a.model)).stem}-ctx{a.ctx}"), evaluate, a.argv, not a.no_plot)


def cmd_bench(a) -> int:
    from . import bench

    prefill = None
    if a.prefill:
        depth, _, n = a.prefill.partition(":")
        prefill = (int(depth), int(n or 2048))
    report = bench.run(a.model, _types(a.kv), [int(d) for d in a.depths.split(",")], n_decode=a.n_decode,
                       repeats=a.repeats, threads=a.threads, n_gpu_layers=a.gpu_layers, prefill=prefill,
                       random_tokens=a.random_tokens, sequential=a.sequential, n_batch=a.n_batch,
                       attention=a.attention, tiers=_tiers(a.tiers), calib=a.calib)
    where = "cuda" if a.gpu_layers else "cpu"
    return publish(report, Path(a.out or f"bench-{where}-{Path(str(a.model)).stem}"), bench, a.argv, not a.no_plot)


def cmd_calibrate(a) -> int:
    from .calibrate import calibrate

    calibrate(a.input, a.output, text=a.text, tokens=a.tokens, seq_len=a.seq_len, threads=a.threads, dry_run=a.dry_run)
    return 0


def cmd_render(a) -> int:
    """Redraw the .md and .png of a saved eval or bench report from its .json."""
    import json

    from . import bench, evaluate, reports

    path = Path(a.report)
    kind = bench if "depths" in json.loads(path.read_text()) else evaluate
    for p in reports.redraw(path.with_suffix(""), kind.markdown, kind.plot):
        print(f"wrote {p}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="oscar-gguf", description="OScaR 2/3/4-bit KV caches for llama.cpp")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="patched llama.cpp build, KV types, backends").set_defaults(fn=cmd_info)
    sub.add_parser("models", help="list the known models").set_defaults(fn=cmd_models)
    kinds = ", ".join(KV_TYPES)

    def common(p, kv_default):
        p.add_argument("--model", default=DEFAULT_MODEL, help="registry name or path to a .gguf file")
        p.add_argument("--kv", default=kv_default, help=f"KV cache type(s): {kinds}")
        p.add_argument("--gpu-layers", type=int, default=0, help="layers to offload to the GPU (-1: all)")

    def tier(p):
        p.add_argument("--sinks", type=int, default=None,
                       help="OScaR caches: first tokens kept in the f16 tier (default: llama.cpp's, 1; 0 with "
                            "--window 0: off)")
        p.add_argument("--window", type=int, default=None,
                       help="OScaR caches: newest tokens kept in the f16 tier (default: llama.cpp's, 128)")

    p = sub.add_parser("chat", help="chat with a model (interactive, or one-shot with --prompt)")
    common(p, "oscar2")
    p.add_argument("--kv-k", help="K cache type (overrides --kv)")
    p.add_argument("--kv-v", help="V cache type (overrides --kv)")
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--prompt", default=None, help="one-shot: answer this and exit")
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's log")
    p.add_argument("--calib", choices=("on", "off"), default=None,
                   help="OScaR caches: apply the model's calibration when it has one (default: llama.cpp's, on)")
    tier(p)
    p.set_defaults(fn=cmd_chat)

    p = sub.add_parser("eval", help="KLD / perplexity / top-1 of KV types against the f16 cache")
    common(p, "f16,q8_0,q4_0,oscar4,oscar3,oscar2")
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--max-chunks", type=int, default=64)
    p.add_argument("--min-chunks", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="output prefix for .json/.md/.png")
    p.add_argument("--no-plot", action="store_true", help="write .json and .md only (draw later with render)")
    p.add_argument("--tiers", help="SINKS:WINDOW[,...]: measure each OScaR type with each f16 tier (default: the default tier)")
    p.add_argument("--calib", choices=CALIB_CHOICES, default="on",
                   help="OScaR types: apply the model's calibration (on), not (off), or measure both ways (both)")
    p.add_argument("--text", choices=list(TEXTS), default=DEFAULT_TEXT,
                   help="evaluation prose (Debian package): python3-doc's documents outside calibration's, or "
                        "debian-handbook, a kind of prose calibration never reads")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("bench", help="decode tokens/s at context depths, prefill at depth, KV buffer sizes")
    common(p, "f16,q4_0,oscar4,oscar3,oscar2")
    p.add_argument("--depths", default="512,2048,4096")
    p.add_argument("--n-decode", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-batch", type=int, default=512, help="batch and micro-batch size for filling the cache")
    p.add_argument("--prefill", help="DEPTH:N also times an N-token prompt on top of DEPTH cached tokens")
    p.add_argument("--random-tokens", action="store_true", help="random token ids (placeholder-vocabulary models)")
    p.add_argument("--sequential", action="store_true", help="load one cache type at a time (large models)")
    p.add_argument("--attention", action="store_true",
                   help="CUDA: also time the flash-attention kernel at 128K context (test-backend-ops perf)")
    p.add_argument("--out", help="output prefix for .json/.md/.png")
    p.add_argument("--no-plot", action="store_true", help="write .json and .md only (draw later with render)")
    p.add_argument("--tiers", help="SINKS:WINDOW[,...]: time each OScaR type with each f16 tier (default: the default tier)")
    p.add_argument("--calib", choices=CALIB_CHOICES, default="on",
                   help="OScaR types: apply the model's calibration (on), not (off), or time both ways (both)")
    p.set_defaults(fn=cmd_bench)

    from .calibrate import DEFAULT_SEQ_LEN, DEFAULT_TOKENS

    p = sub.add_parser("calibrate", help="measure per-channel K/V statistics and write a calibrated copy of a GGUF")
    p.add_argument("input", help="registry name or path to a .gguf file")
    p.add_argument("output", help="the calibrated .gguf to write (never the input)")
    p.add_argument("--text", help="UTF-8 text file to calibrate on (default: the calibration corpus)")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="text tokens to measure")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, help="tokens per sequence (BOS included)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="measure and print what would be written; write nothing")
    p.set_defaults(fn=cmd_calibrate)

    p = sub.add_parser("render", help="redraw the .md/.png of a saved eval or bench .json")
    p.add_argument("report")
    p.set_defaults(fn=cmd_render)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parser().parse_args(argv)
    a.argv = argv
    try:
        return a.fn(a)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"oscar-gguf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
