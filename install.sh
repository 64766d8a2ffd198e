#!/usr/bin/env bash
# Set up oscar-gguf on a fresh Linux machine: optional system packages, .venv, the patched llama.cpp
# (a llama-cpp-python 0.3.36 wheel built from its sdist + patches/ with native/, and the llama.cpp tools linked into
# .venv/bin), and the oscar_gguf package.
# Re-running with nothing changed rebuilds nothing. OSCAR_CUDA=1 builds the CUDA backend too.
set -euo pipefail
cd "$(dirname "$0")"

# System packages: git (applies the patches) is required; ccache (faster rebuilds) and Debian's python3-doc
# (evaluation prose, which oscar_gguf.corpus can also fetch without root) are installed when we can.
command -v git >/dev/null || { echo "[oscar-gguf] git is required (apt-get install git)" >&2; exit 1; }
wanted=()
command -v ccache >/dev/null || wanted+=(ccache)
[ -d /usr/share/doc/python3-doc/html ] || wanted+=(python3-doc)
if [ ${#wanted[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
    if [ "$sudo" = none ]; then
        echo "[oscar-gguf] not root: skipping optional system packages ${wanted[*]}"
    else
        echo "[oscar-gguf] installing system packages: ${wanted[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${wanted[@]}" >/dev/null
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python

# The oscar_gguf package (and liboscar through scikit-build-core), reinstalled only when its sources change.
pkg_key=$(find pyproject.toml CMakeLists.txt native oscar_gguf models -type f ! -name "*.pyc" | sort | xargs cat | sha256sum | cut -d" " -f1)
if [ "$(cat .venv/.oscar-gguf-key 2>/dev/null)" != "$pkg_key" ]; then
    echo "[oscar-gguf] installing the oscar_gguf package"
    $py -m pip install -q --upgrade pip
    $py -m pip install -q ".[test]"
    echo "$pkg_key" > .venv/.oscar-gguf-key
fi

# CMake and Ninja from PyPI when the system has none; scikit-build-core builds the llama-cpp-python wheel.
for tool in cmake ninja; do command -v $tool >/dev/null || [ -x .venv/bin/$tool ] || $py -m pip install -q $tool; done
$py -c "import scikit_build_core" 2>/dev/null || $py -m pip install -q "scikit-build-core>=0.10"
PATH="$PWD/.venv/bin:$PATH" $py scripts/build_llama.py --python "$py"
