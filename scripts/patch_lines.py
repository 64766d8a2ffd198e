#!/usr/bin/env python3
"""Added lines of patches/ by class, for a set of patches now and at another git revision: how much of the patch set
is hooks into our own files, and how much is logic that lives inside llama.cpp's hunks.

Classes of an added line (heuristic, by regular expressions; the table says how many lines each has):
  hook         a call into oscar-gguf's own code (native/, the llama-kv-oscar module, its options headers)
  declaration  a member, parameter, field, prototype, include, build line, constant or binding (Python ctypes)
  comment      a comment or a blank line
  logic        anything else: control flow, arithmetic, algorithms (policy that should live in our own files)

    python3 scripts/patch_lines.py [--before REV] [--out docs/patch-lines]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HOOK = re.compile(r"\boscar->|\bllama_kv_oscar|\boscar(_swa)?\.(build|set_input|can_reuse|attn)\b|"
                  r"\bbench_oscar|llama_oscar_add_args|oscar_undo|\binp_attn->oscar\.|"
                  r"\boscar_calib\.load\b|include\(\$\{OSCAR_NATIVE_DIR\}|params\.oscar[._]|, &tier\);|"
                  r"store_kv \? k_cur")
DECL = re.compile(r"^\s*(#include|#define|struct\s+\w+\s*[;{]|class\s+\w+|friend\s|typedef\s|using\s|extern\s|"
                  r"target_\w+\(|set\(|add_\w+\(|int32_t\s+\w+[;,]|uint\d+_t\s+\w+[;,]|bool\s+\w+\s*[=;,]|"
                  r"[\w:<>\s\*&,]+\s[\*&]?\w+(\s*=\s*[^;()]+)?;\s*(//.*)?$|"       # a member or variable declaration
                  r"[\w:<>\s\*&]+\s\*?\w+\(.*\)\s*(const)?\s*(override)?\s*;|"     # a prototype
                  r"/\*\.\w+\s*=\*/|\(\"\w+\", ctypes\.|\w+: (int|float|bool|str|Optional)|GGML_TYPE_\w+ = |"
                  r"@ctypes_function|def \w+\(.*\) -> .*: \.\.\.|\"\"\"|\.\.\.$|\]$|\)$|\}$|\};$|\{$|"
                  r"[\w\*&:<>]+ \w+,$|[\w\*&:<>\s]+\s\w+\s*=\s*nullptr,?$)")
COMMENT = re.compile(r"^\s*(//|#(?!include|define)|/\*|\*|$)")


def classify(line: str, python: bool) -> str:
    code = line.rstrip("\n")
    if COMMENT.match(code) and not code.strip().startswith("#include"):
        return "comment"
    if HOOK.search(code):
        return "hook"
    if DECL.match(code):
        return "declaration"
    if python and re.match(r"^\s*(\w+: \w|\(\"|\w+ = \d|[\]\)\}],?$|def |class |@|import |from )", code):
        return "declaration"
    return "logic"


def added_lines(text: str):
    path = None
    for line in text.splitlines():
        if line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else line[4:]
        elif line.startswith("+") and path:
            yield path, line[1:]


def area(path: str) -> str:
    if path.startswith("llama_cpp/"):
        return "python"
    p = path.removeprefix("vendor/llama.cpp/")
    if p.startswith(("src/", "include/llama.h")):
        return "libllama"
    if p.startswith(("common/", "tools/")):
        return "tools"
    return "ggml and tests"


def count(patches: dict[str, str]) -> dict:
    by = Counter()
    files = Counter()
    for name, text in patches.items():
        for path, line in added_lines(text):
            by[(area(path), classify(line, path.endswith(".py")))] += 1
            files[area(path)] += 1
    return {"lines": {f"{a}/{c}": n for (a, c), n in sorted(by.items())}, "total": sum(by.values()),
            "by_area": dict(files)}


def patches_at(rev: str | None) -> dict[str, str]:
    if rev is None:
        return {p.name: p.read_text() for p in sorted((ROOT / "patches").glob("*.patch"))}
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "patches/"], check=True,
                           capture_output=True, text=True).stdout.split()
    return {Path(n).name: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{n}"], check=True,
                                         capture_output=True, text=True).stdout for n in names if n.endswith(".patch")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=None, help="git revision to compare with (e.g. 4973daa)")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    a = ap.parse_args()
    sets = {"now": count(patches_at(None))}
    if a.before:
        sets[a.before] = count(patches_at(a.before))
    keys = sorted({k for s in sets.values() for k in s["lines"]})
    cols = list(sets)
    lines = ["Added lines of patches/ by area and class (scripts/patch_lines.py; classes by regular expression: "
             "hook = a call into our own files, declaration = members, parameters, fields, includes, bindings, "
             "logic = everything else).", "",
             "| area / class | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(str(sets[c]["lines"].get(k, 0)) for c in cols) + " |")
    lines.append("| **total** | " + " | ".join(str(sets[c]["total"]) for c in cols) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.with_suffix(".json").write_text(json.dumps(sets, indent=1) + "\n")
        a.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
