"""Seeded mutations of the calibrated default model (tests/fuzz_gguf.py: calibration values, key types, array lengths,
dropped keys, header bytes, truncation, alignment), each through oscar_gguf.load, plain llama_cpp.Llama and some
through oscar-gguf calibrate: no signal, no NaN logits after a load that succeeded, no error of a kind we do not
raise on purpose, and no output file (or leftover) from a calibration that failed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from oscar_gguf.ggufmeta import check_complete, read_gguf
from oscar_gguf.models import resolve

HERE = Path(__file__).resolve().parent
N_LOAD = 240      # seeds through both loads, two workers
N_CALIBRATE = 10  # of them, also through the command line


def run_workers(base: Path, out: Path, seeds: list[int], workers: int = 2) -> list[str]:
    """Lines of the workers; a worker that dies is reported with the seed it was on and restarted after it."""
    lines, todo = [], [seeds[i::workers] for i in range(workers)]
    while any(todo):
        procs = [subprocess.Popen([sys.executable, str(HERE / "fuzz_gguf.py"), str(base), str(out), *map(str, part)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for part in todo if part]
        todo = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=1800)
            got = stdout.splitlines()
            lines += [line for line in got if not line.startswith("START")]
            if p.returncode != 0:
                started = [int(line.split()[1]) for line in got if line.startswith("START")]
                crashed = started[-1] if started else None
                lines.append(f"BAD {crashed} worker ended with {p.returncode}: {stderr[-1500:]}")
                rest = [int(a) for a in p.args[4:]]
                todo.append(rest[rest.index(crashed) + 1:] if crashed in rest else [])
    return lines


def test_mutated_calibrated_files_are_refused_or_work(tmp_path):
    lines = run_workers(resolve("smollm2"), tmp_path, list(range(N_LOAD)))
    bad = [line for line in lines if line.startswith("BAD")]
    ok = [line for line in lines if line.startswith("OK")]
    refused = [line for line in ok if "refused" in line or "Error" in line]
    print(f"{len(ok)} handled ({len(refused)} refused in words), {len(bad)} bad")
    assert not bad, "\n".join(bad[:20])
    assert len(ok) == N_LOAD and len(refused) > N_LOAD // 3


@pytest.mark.parametrize("seed", range(N_CALIBRATE))
def test_mutated_files_through_calibrate(tmp_path, seed):
    sys.path.insert(0, str(HERE))
    import fuzz_gguf

    src = resolve("smollm2")
    mutated, out = tmp_path / "in.gguf", tmp_path / "out.gguf"
    what = fuzz_gguf.mutate(fuzz_gguf.read_header(src), src, mutated, 1000 + seed)
    r = subprocess.run([str(Path(sys.executable).parent / "oscar-gguf"), "calibrate", str(mutated), str(out),
                        "--tokens", "64", "--seq-len", "64"], capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 2), (what, r.returncode, r.stderr[-2000:])
    if r.returncode == 2:
        assert r.stderr.startswith("oscar-gguf: error: ") and not out.exists(), (what, r.stderr[-500:])
    else:
        check_complete(read_gguf(out))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")], what
