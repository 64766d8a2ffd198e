"""The installed patched llama.cpp: build identity, type names, and test-backend-ops for the OScaR cases."""
import re
import subprocess

from oscar_gguf import cli, info
from processes import tool


def test_info_names_commit_types_and_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "0c1e570" in out and "CPU" in out
    for line in ("oscar2   2.25", "oscar3   3.25", "oscar4   4.25", "q4_0     4.50"):
        assert line in out
    assert "library calls it" not in out


def test_ggml_knows_our_types():
    names = info.ggml_type_names()
    assert (names[43], names[44], names[45]) == ("oscar2", "oscar3", "oscar4")


def test_backend_ops_oscar_cases_pass_on_cpu():
    r = subprocess.run([str(tool("test-backend-ops")), "-b", "CPU", "-p", "oscar"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    passed, total = map(int, re.search(r"(\d+)/(\d+) tests passed", r.stdout).groups())
    assert passed == total >= 400
    for op in ("SET_ROWS", "CPY", "GET_ROWS", "FLASH_ATTN_EXT"):
        assert re.search(rf"{op}\(.*oscar", r.stdout), op
    for hs in (64, 128, 256):
        assert f"FLASH_ATTN_EXT(hsk={hs},hsv={hs}" in r.stdout
