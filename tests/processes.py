"""The llama.cpp tools of the installed build, and servers the tests start and stop themselves, on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from oscar_gguf import info


def tool(name: str) -> Path:
    """A tool of the patched build (llama-perplexity, llama-server, ggml-rpc-server, ...)."""
    return Path(info.build_stamp()["build_dir"]) / "bin" / name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(cmd: list[str], log: Path, ready: Callable[[], bool], timeout: float, env: dict | None = None):
    """Start cmd (output to log), wait until ready() says it serves, yield the process; stop it by PID after."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + timeout
            while not ready():
                if proc.poll() is not None:
                    raise AssertionError(f"{cmd[0]} exited ({proc.returncode}): {log.read_text()[-3000:]}")
                if time.time() > deadline:
                    raise AssertionError(f"{cmd[0]} did not come up: {log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
