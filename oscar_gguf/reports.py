"""Write a result as JSON, a Markdown table and a PNG plot side by side, each atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def write(report: dict, out_prefix: Path, markdown: Callable[[dict], str],
          plot: Callable[[dict, Path], None] | None) -> list[Path]:
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    writers = [(".json", lambda p: p.write_text(json.dumps(report, indent=2) + "\n")),
               (".md", lambda p: p.write_text(markdown(report)))]
    if plot is not None:
        writers.append((".png", lambda p: plot(report, p)))
    for suffix, writer in writers:
        final = out_prefix.with_suffix(suffix)
        tmp = final.with_name(final.stem + ".tmp" + suffix)
        writer(tmp)
        os.replace(tmp, final)
        paths.append(final)
    return paths


def redraw(out_prefix: Path, markdown: Callable[[dict], str], plot: Callable[[dict, Path], None] | None) -> list[Path]:
    """Write a saved report's .md and .png again from its .json (after a change to how they are drawn)."""
    return write(json.loads(out_prefix.with_suffix(".json").read_text()), out_prefix, markdown, plot)
