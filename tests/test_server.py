"""The servers a llama.cpp user runs, given only the cache type, talked to with the openai client: llama-server
(chat, streamed chat, 4 parallel slots that answer as 4 single requests do, a second request reusing the cached
prompt) and llama-cpp-python's server. Each is started and stopped by the test, on 127.0.0.1."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from oscar_gguf import info
from oscar_gguf.models import resolve

QUESTIONS = ["Name three rivers.", "What is the capital of France?", "Give me a word that rhymes with cat.",
             "How many legs does a spider have?"]
MAX_TOKENS = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(cmd: list[str], port: int, log: Path, env: dict | None = None):
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 180
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited ({proc.returncode}): {log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise AssertionError(f"server did not come up: {log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def client(port: int):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600, max_retries=0)


def ask(c, question: str) -> str:
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": question}], temperature=0,
                                  max_tokens=MAX_TOKENS, seed=0)
    return r.choices[0].message.content


def test_llama_server_with_only_the_cache_type(tmp_path):
    port = free_port()
    tool = Path(info.build_stamp()["build_dir"]) / "bin" / "llama-server"
    cmd = [str(tool), "-m", str(resolve("smollm2")), "-ctk", "oscar2", "-ctv", "oscar2", "-np", "4", "-c", "4096",
           "-t", "2", "--host", "127.0.0.1", "--port", str(port), "-v"]
    with server(cmd, port, tmp_path / "server.log"):
        c = client(port)
        single = [ask(c, q) for q in QUESTIONS]
        assert all(single), single

        stream = c.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                           temperature=0, max_tokens=MAX_TOKENS, seed=0, stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == single[0]

        parallel: list[str | None] = [None] * len(QUESTIONS)
        start = threading.Barrier(len(QUESTIONS))

        def run(i: int) -> None:
            start.wait()
            parallel[i] = ask(client(port), QUESTIONS[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert parallel == single

        again = c.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTIONS[1]}],
                                          temperature=0, max_tokens=MAX_TOKENS, seed=0)
        assert again.choices[0].message.content == single[1]
        assert (again.model_extra or {}).get("timings", {}).get("cache_n", 0) > 0, again.model_extra
    log = (tmp_path / "server.log").read_text()
    assert "oscar-gguf f16 tier: 1 sinks + 128 window per sequence" in log, log[-3000:]
    assert "oscar-gguf: calibration applied to K and V" in log


def test_llama_cpp_python_server_with_only_the_cache_type(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve("smollm2")), "--type_k", "oscar2",
           "--type_v", "oscar2", "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ)
    with server(cmd, port, tmp_path / "server.log", env):
        c = client(port)
        first = ask(c, QUESTIONS[1])
        assert first
        stream = c.chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTIONS[1]}],
                                           temperature=0, max_tokens=MAX_TOKENS, seed=0, stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == first
        assert ask(c, QUESTIONS[1]) == first  # the prompt now comes from the cache
    log = (tmp_path / "server.log").read_text()
    assert "oscar-gguf f16 tier: 1 sinks + 128 window per sequence" in log, log[-3000:]
    assert "oscar-gguf: calibration applied to K and V" in log


def test_python_server_refuses_unknown_type_names(tmp_path):
    r = subprocess.run([sys.executable, "-m", "llama_cpp.server", "--model", str(resolve("smollm2")),
                        "--type_k", "oscar5", "--port", str(free_port())], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "unknown ggml type 'oscar5'" in r.stderr + r.stdout
