#!/usr/bin/env python3
"""Pack the patched llama.cpp source (pruned to what a CUDA build of our targets needs) for the GPU machine.

The GPU machine has no network and takes at most 64 MiB with the repo, so the sdist cannot travel whole:
this writes .carry/llama-src.tar.gz (about 5 MiB) from the tree scripts/build_llama.py prepared.
    python3 scripts/build_llama.py ... && python3 scripts/gpu_bundle.py
"""
from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_llama import cache_dir  # noqa: E402

KEEP = ["CMakeLists.txt", "LICENSE", "cmake", "include", "src", "common", "vendor", "licenses", "tests", "tools",
        "ggml/CMakeLists.txt", "ggml/cmake", "ggml/include", "ggml/src/ggml-cpu", "ggml/src/ggml-cuda"]
SKIP_TOOLS = {"ui", "server", "cli", "rpc", "tuning"}


def wanted(rel: Path) -> bool:
    p = rel.parts
    if p[0] == "tools" and len(p) > 1 and p[1] in SKIP_TOOLS:
        return False
    if p[:2] == ("ggml", "src"):  # files directly in ggml/src, and the CPU and CUDA backends only
        return len(p) == 3 or p[2] in ("ggml-cpu", "ggml-cuda")
    return any(rel == Path(k) or Path(k) in rel.parents for k in KEEP)


def main() -> int:
    src = cache_dir() / "src" / "llama-cpp-python"
    if not (src / ".oscar-source-key").exists():
        print("run scripts/build_llama.py first (it prepares the patched tree)", file=sys.stderr)
        return 1
    tree = src / "vendor" / "llama.cpp"
    out = ROOT / ".carry" / "llama-src.tar.gz"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tf:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames:
                rel = (Path(dirpath) / name).relative_to(tree)
                if wanted(rel):
                    tf.add(Path(dirpath) / name, arcname=str(Path("llama.cpp") / rel))
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
