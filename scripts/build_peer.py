#!/usr/bin/env python3
"""Build the peer fork we measure against (TheTom/llama-cpp-turboquant, ../shared/peers/) beside our tree: its
llama-bench and llama-perplexity, for the CPU or CUDA. Nothing of it enters our package; it is only run.

    python3 scripts/build_peer.py [--cuda] [--tarball PATH] [--archs 90]

prints the folder holding its tools (under the oscar-gguf cache: build/peer-cpu or build/peer-cuda)."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_llama import cache_dir, cpu_flags  # noqa: E402

TARGETS = ["llama-bench", "llama-perplexity"]
# The peer's KV types: bits per element on heads whose size is a multiple of its 128-element block (its README,
# ../shared/peers/README.md); other head sizes are zero-padded up to the next multiple of 128 in its cache.
PEER_BITS = {"turbo2": 2.125, "turbo3": 3.125, "turbo4": 4.25}
PEER_BLOCK = 128


def peer_bits(name: str, head_dim: int) -> float:
    """Bits the peer's cache spends per element of a head_dim-wide head (padding included)."""
    padded = -(-head_dim // PEER_BLOCK) * PEER_BLOCK
    return PEER_BITS[name] * padded / head_dim


def default_tarball() -> Path | None:
    found = sorted((ROOT.parent / "shared" / "peers").glob("llama-cpp-turboquant-*.tar.gz"))
    return found[-1] if found else None


def unpack(tarball: Path, dest: Path) -> Path:
    """The peer's source tree (unpacked once per tarball name: the name carries its commit)."""
    tree = dest / tarball.name.removesuffix(".tar.gz")
    if not (tree / "turbo" / "CMakeLists.txt").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        with tarfile.open(tarball) as tf:
            tf.extractall(tree, filter="data")
    return tree / "turbo"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--tarball", type=Path, default=default_tarball())
    ap.add_argument("--archs", default="90", help="CUDA architectures (with --cuda)")
    ap.add_argument("--jobs", type=int, default=0)
    a = ap.parse_args()
    if a.tarball is None or not a.tarball.exists():
        print(f"no peer source tarball (looked for {a.tarball or ROOT.parent / 'shared/peers'})", file=sys.stderr)
        return 1
    src = unpack(a.tarball, cache_dir() / "src" / "peer")
    build = cache_dir() / "build" / ("peer-cuda" if a.cuda else "peer-cpu")
    flags = " ".join(cpu_flags())  # the same AMX guard as our builds (ggml's AMX matmul crashes on AMX machines)
    args = ["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF", f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"]
    if shutil.which("ccache"):
        args += ["-DGGML_CCACHE=ON"]
    if a.cuda:
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={a.archs}"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    jobs = ["-j", str(a.jobs)] if a.jobs else []
    subprocess.run(["cmake", "--build", str(build), "--target", *TARGETS, *jobs], check=True)
    print(build / "bin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
