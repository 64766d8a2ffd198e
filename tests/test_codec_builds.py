"""The codec tests again against the other builds of native/: portable C, and baseline ISA (AVX2 decode and trellis
encoder chosen at run time, scalar dot), as a machine without AVX2 or ggml-base (built without -march) runs them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("flags", [["-DOSCAR_PORTABLE_C"], []], ids=["portable-c", "baseline-isa"])
def test_codec_suite_on_other_builds(tmp_path, flags):
    lib = tmp_path / "liboscar.so"
    native = ROOT / "native"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", *flags, f"-I{native}", str(native / "oscar.c"),
                    str(native / "oscar_tcq.c"), str(native / "oscar_dot.c"), "-o", str(lib), "-lm"], check=True)
    env = dict(os.environ, OSCAR_NATIVE_LIB=str(lib))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_codec.py")],
                       env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
