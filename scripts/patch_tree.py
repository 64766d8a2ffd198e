#!/usr/bin/env python3
"""Edit patches/ as code: a git work tree of the pinned sdist with one commit per patch, and the patches written back.

    python3 scripts/patch_tree.py make DIR     # DIR: the sdist, committed; then each patch applied as a commit
                                               # whose subject is the patch's file name
    python3 scripts/patch_tree.py export DIR   # write each such commit (its diff from its parent) to patches/

Change a patch by committing the change as a fixup of its commit (git commit --fixup, git rebase -i --autosquash)
and exporting; a new patch is a new commit with the new file name as its subject. Build DIR like any llama.cpp tree
(cmake -S DIR/vendor/llama.cpp -DOSCAR_NATIVE_DIR=native ...) to compile while editing.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_llama import SDIST_VERSION, fetch_sdist, patch_files  # noqa: E402


def git(d: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(d), *args], check=True, capture_output=True, text=True).stdout


def make(d: Path) -> None:
    if d.exists():
        raise SystemExit(f"{d} exists; remove it first")
    with tarfile.open(fetch_sdist(sys.executable)) as tf:
        tf.extractall(d.parent, filter="data")
    (d.parent / f"llama_cpp_python-{SDIST_VERSION}").rename(d)
    subprocess.run(["rm", "-rf", str(d / ".git"), str(d / "vendor" / "llama.cpp" / ".git")], check=True)
    git(d, "init", "-q")
    git(d, "add", "-A")
    git(d, "-c", "user.name=oscar-gguf", "-c", "user.email=dev@localhost", "commit", "-qm", "sdist")
    for p in patch_files():
        git(d, "apply", "--whitespace=nowarn", str(p))
        git(d, "add", "-A")
        git(d, "-c", "user.name=oscar-gguf", "-c", "user.email=dev@localhost", "commit", "-qm", p.name)
    print(f"{d}: the sdist and {len(patch_files())} patches, one commit each")


def same_change(a: str, b: str) -> bool:
    """The same files and lines changed, whatever git's index lines, hunk offsets and file order say."""
    def key(t: str) -> list[str]:
        lines = [line for line in t.splitlines() if not line.startswith(("index ", "diff --git", "@@"))]
        files, cur = [], []
        for line in lines:
            if line.startswith("--- ") and cur:
                files.append("\n".join(cur))
                cur = []
            cur.append(line)
        return sorted(files + ["\n".join(cur)])
    return key(a) == key(b)


def export(d: Path) -> None:
    if git(d, "status", "--porcelain").strip():
        raise SystemExit(f"{d} has uncommitted changes: commit them into the patch they belong to first")
    lines = git(d, "log", "--reverse", "--format=%H %s").strip().split("\n")
    names = []
    for line in lines[1:]:  # the first commit is the sdist
        commit, name = line.split(" ", 1)
        if not name.endswith(".patch"):
            raise SystemExit(f"commit {commit[:10]} ({name!r}) is not named for a patch")
        path, text = ROOT / "patches" / name, git(d, "diff", f"{commit}~1", commit)
        if not path.exists() or same_change(path.read_text(), text) is False:
            path.write_text(text)  # an unchanged patch keeps its bytes (git writes other index lines and contexts)
        names.append(name)
    for p in patch_files():
        if p.name not in names:
            p.unlink()
            print(f"removed {p.name} (no commit of that name)")
    print(f"wrote {', '.join(names)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("make", "export"))
    ap.add_argument("dir", type=Path)
    a = ap.parse_args()
    (make if a.what == "make" else export)(a.dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
