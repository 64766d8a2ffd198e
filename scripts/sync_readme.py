#!/usr/bin/env python3
"""Copy the committed result tables (docs/*.md, written by oscar-gguf eval/bench) into README.md."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLES = ["docs/eval-texts.md", "docs/bench-tcq-cuda-llama8b-h100.md", "docs/bench-cpu-amd-smollm2.md",
          "docs/bench-cpu-amd-scalar-smollm2.md", "docs/tcq-mse.md", "docs/tcq-mse-3bit.md",
          "docs/tcq-kld-smollm2-handbook-ctx2048.md", "docs/pareto-cpu-gemma3-handbook-ctx2048.md",
          "docs/pareto-cpu-smollm2-handbook-ctx2048.md",
          "docs/bench-peer-cuda-llama8b-h200.md", "docs/eval-calib-smollm2-ctx2048.md", "docs/eval-calib-gemma3-ctx2048.md",
          "docs/bench-calib-cuda-llama8b-h100.md", "docs/eval-smollm2-ctx2048.md", "docs/eval-tier-smollm2-ctx2048.md",
          "docs/eval-tier-gemma3-ctx2048.md", "docs/bench-tier-cuda-llama8b-h100.md", "docs/bench-tier-cpu16-smollm2.md", "docs/bench-cpu-attn-smollm2.md",
          "docs/bench-cpu-attn-avx2-smollm2.md", "docs/bench-cpu-smollm2.md",
          "docs/bench-cuda-llama8b-h100.md"]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def results_block() -> str:
    parts = []
    for rel in TABLES:
        parts.append(f"From [`{rel}`]({rel}) (command and raw data in the `.json` beside it):\n\n"
                     + (ROOT / rel).read_text().strip() + "\n")
    return BEGIN + "\n" + "\n".join(parts) + END


def synced(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + results_block() + tail


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(synced(path.read_text()))
