"""ggml's RPC backend with OScaR caches: every layer, and so the cache with its f16 tier and calibration planes, on one
or two ggml-rpc-servers (started and stopped by the test, on 127.0.0.1), read through llama-perplexity: the logits
are the local run's within the floor of two CPU backends. A stock rpc-server, which has no OScaR types, is refused
in words when offered an OScaR cache and still serves an f16 one."""
from __future__ import annotations

import re
import socket
import subprocess
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from oscar_gguf.corpus import load_corpus
from oscar_gguf.models import resolve
from processes import free_port, running, tool

CTX, CHUNKS = 512, 2


def listening(port: int) -> bool:  # (an rpc-server closes a connection that sends no hello)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def rpc_server(binary: Path, log: Path):
    """One rpc-server on 127.0.0.1 (2 threads); yields its endpoint."""
    port = free_port()
    with running([str(binary), "-H", "127.0.0.1", "-p", str(port), "-t", "2"], log, lambda: listening(port), 60):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def prose_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("prose") / "prose.txt"
    p.write_text(load_corpus("eval").text[:20000])
    return p


def perplexity(prose: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(tool("llama-perplexity")), "-m", str(resolve("smollm2")), "-f", str(prose), "-c", str(CTX),
           "--chunks", str(CHUNKS), "-t", "2", "-v", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def kld(r: subprocess.CompletedProcess) -> tuple[float, float]:
    """llama-perplexity's mean KLD and same-top-token share against the base run."""
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    return float(re.search(r"Mean\s+KLD:\s+(-?[\d.e+-]+)", out)[1]), float(re.search(r"Same top p:\s+([\d.]+)", out)[1])


def test_oscar_cache_on_rpc_servers(prose_file, tmp_path):
    base = tmp_path / "local.kld"
    local = perplexity(prose_file, "-ctk", "oscar2", "-ctv", "oscar2", "--kl-divergence-base", str(base))
    assert local.returncode == 0, local.stderr[-3000:]
    results = {}
    for n in (1, 2):
        with ExitStack() as stack:
            eps = [stack.enter_context(rpc_server(tool("ggml-rpc-server"), tmp_path / f"rpc{n}-{i}.log"))
                   for i in range(n)]
            r = perplexity(prose_file, "-ctk", "oscar2", "-ctv", "oscar2", "--rpc", ",".join(eps), "-ngl", "99",
                           "--kl-divergence-base", str(base), "--kl-divergence")
        results[n] = kld(r)
        log = r.stdout + r.stderr
        kv = re.findall(r"llama_kv_cache:\s+(\S+) KV buffer size", log)
        assert set(kv) == {f"RPC0[{ep}]" for ep in eps}, kv  # every KV byte is remote (device 0 of each server)
        assert "oscar-gguf f16 tier: 1 sinks + 128 window" in log and "calibration applied to K and V" in log
    print(f"oscar2 on rpc-servers against the local run: 1 server KLD {results[1][0]:.2e} (same top "
          f"{results[1][1]:.2f} %), 2 servers {results[2][0]:.2e} ({results[2][1]:.2f} %)")
    for k, top in results.values():  # measured 1e-6 (llama-perplexity's last digit), 100 %: the floor of two CPU
        assert abs(k) < 1e-4 and top > 99, results  # backends; oscar2 itself is 0.035 from f16 on such text


def test_stock_rpc_server_is_refused_in_words(prose_file, tmp_path, stock_llama):
    stock = stock_llama[1] / "ggml-rpc-server"
    with rpc_server(stock, tmp_path / "stock.log") as ep:
        r = perplexity(prose_file, "-ctk", "oscar2", "-ctv", "oscar2", "--rpc", ep, "-ngl", "99", "--chunks", "1")
        assert r.returncode == 1, (r.returncode, r.stderr[-3000:])  # an error, not a signal
        assert re.search(rf"oscar-gguf: layer 0's K cache is on RPC0 \({ep}\), which cannot hold oscar2", r.stderr), \
            r.stderr[-3000:]
        f16 = perplexity(prose_file, "--rpc", ep, "-ngl", "99", "--chunks", "1")
        assert f16.returncode == 0 and "Final estimate" in f16.stdout + f16.stderr, f16.stderr[-3000:]
