#!/usr/bin/env bash
# Set up oscar-gguf on a fresh Linux machine: system packages, .venv, the patched llama.cpp
# (llama-cpp-python 0.3.36 + patches/, compiled with native/), and the oscar_gguf package.
# Re-running with nothing changed rebuilds nothing. OSCAR_CUDA=1 builds the CUDA backend too.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v ccache >/dev/null || missing+=(ccache)
command -v git >/dev/null || missing+=(git)
[ -d /usr/share/doc/python3-doc/html ] || missing+=(python3-doc)   # evaluation and calibration prose
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
    if [ "$sudo" = none ]; then
        echo "[oscar-gguf] please install: ${missing[*]} (apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "[oscar-gguf] installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python

# The oscar_gguf package (and liboscar through scikit-build-core), reinstalled only when its sources change.
pkg_key=$(cat pyproject.toml CMakeLists.txt native/* oscar_gguf/*.py models/* | sha256sum | cut -d" " -f1)
if [ "$(cat .venv/.oscar-gguf-key 2>/dev/null)" != "$pkg_key" ]; then
    echo "[oscar-gguf] installing the oscar_gguf package"
    $py -m pip install -q --upgrade pip
    $py -m pip install -q ".[test]"
    echo "$pkg_key" > .venv/.oscar-gguf-key
fi

$py scripts/build_llama.py --python "$py"
