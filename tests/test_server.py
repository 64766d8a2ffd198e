"""The servers a llama.cpp user runs, given only the cache type, talked to with the openai client: llama-server
(chat, streamed chat, 4 parallel slots that answer as 4 single requests do, a second request reusing the cached
prompt) and llama-cpp-python's server. Each is started and stopped by the test, on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

from oscar_gguf.models import resolve
from processes import free_port, running, tool

QUESTIONS = ["Name three rivers.", "What is the capital of France?", "Give me a word that rhymes with cat.",
             "How many legs does a spider have?"]
MAX_TOKENS = 24


def serves(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False
    return ready


def server(cmd: list[str], port: int, log: Path, env: dict | None = None):
    return running(cmd, log, serves(port), 180, env)


def client(port: int):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600, max_retries=0)


def ask(c, question: str) -> str:
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": question}], temperature=0,
                                  max_tokens=MAX_TOKENS, seed=0)
    return r.choices[0].message.content


def test_llama_server_with_only_the_cache_type(tmp_path):
    port = free_port()
    cmd = [str(tool("llama-server")), "-m", str(resolve("smollm2")), "-ctk", "oscar2", "-ctv", "oscar2", "-np", "4", "-c", "4096",
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


def server_top_logprobs(port: int, prompt: list[int], n: int, k: int) -> tuple[list[int], list[dict[int, float]]]:
    """llama-server's greedy continuation of a tokenized prompt and, per generated token, the top k log
    probabilities of the distribution it was drawn from (before sampling)."""
    body = json.dumps({"prompt": prompt, "n_predict": n, "temperature": 0, "n_probs": k, "cache_prompt": False,
                       "return_tokens": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.load(r)
    assert out["tokens_evaluated"] == len(prompt), out["tokens_evaluated"]
    probs = out["completion_probabilities"]
    return [p["id"] for p in probs], [{t["id"]: t["logprob"] for t in p["top_logprobs"]} for p in probs]


def llama_logprobs(prompt: list[int], gen: list[int], **kw) -> np.ndarray:
    """Plain llama_cpp.Llama's log probabilities at each position that predicts a generated token, fed as the server
    feeds them: the prompt in batches of 512, then one token at a time."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(resolve("smollm2")), n_ctx=2048, logits_all=True, verbose=False, **kw)
    llm.eval(prompt)
    for t in gen[:-1]:
        llm.eval([t])
    logits = np.array(llm.scores[len(prompt) - 1:len(prompt) + len(gen) - 1], dtype=np.float64)
    llm.close()
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def test_llama_server_distributions_are_plain_llamas(tmp_path):
    """The server given only -ctk/-ctv oscar2 computes the distributions plain Llama(type_k="oscar2") does, the
    ones whose KL divergence test_entry_points compares with every other door: a prompt longer than the f16 window,
    so most of it is read from the 2-bit cache."""
    from oscar_gguf.corpus import load_corpus

    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(resolve("smollm2")), vocab_only=True, verbose=False)
    prompt = vocab.tokenize(load_corpus("eval").text[:6000].encode(), add_bos=True)[:900]
    vocab.close()
    port = free_port()
    cmd = [str(tool("llama-server")), "-m", str(resolve("smollm2")), "-ctk", "oscar2", "-ctv", "oscar2", "-np", "2", "-c", "4096",
           "-t", "2", "--host", "127.0.0.1", "--port", str(port)]
    with server(cmd, port, tmp_path / "server.log"):
        gen, top = server_top_logprobs(port, prompt, 32, 20)
    ids = [list(t) for t in top]
    served = np.array([list(t.values()) for t in top])

    def gap(lp: np.ndarray) -> float:  # mean |Δ log p| over the server's top 20 tokens
        return float(np.abs(np.take_along_axis(lp, np.array(ids), 1) - served).mean())

    same = gap(llama_logprobs(prompt, gen, type_k="oscar2", type_v="oscar2"))
    bare = gap(llama_logprobs(prompt, gen, type_k="oscar2", type_v="oscar2", oscar_sinks=0, oscar_window=0))
    uncal = gap(llama_logprobs(prompt, gen, type_k="oscar2", type_v="oscar2", oscar_calib=False))
    f16 = gap(llama_logprobs(prompt, gen, type_k="f16", type_v="f16"))
    print(f"mean |d log p| of llama-server's top 20 against plain Llama: oscar2 {same:.2e}, without tier "
          f"{bare:.2e}, uncalibrated {uncal:.2e}, f16 cache {f16:.2e}")
    assert same < 0.1 * min(bare, uncal, f16), (same, bare, uncal, f16)
