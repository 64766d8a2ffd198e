#!/usr/bin/env python3
"""`oscar-gguf` for the GPU image: the same command line, with llama_cpp imported before anything else.

On that image's Python, numpy imported before llama_cpp makes llama.cpp's tokenizer set-up crash (a C++ runtime
clash of its wheels with our build; docs/NOTES.md), and the CLI's modules import numpy at load time.
    python3 scripts/gpu_cli.py bench ...
"""
import llama_cpp  # noqa: F401  (first on purpose)
import sys

from oscar_gguf.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
