"""Simulated Ollama nodes as real processes for the simulator's own tests.

`start_sim(*args)` starts `python -m corral.sim` on a free loopback port, waits (by condition, with a
deadline) until GET / answers, and stops the process afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")
FAST = ("--tokens-per-second", "1000", "--load-seconds", "0.05")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/_sim/stats", timeout=5).json()
        return data

    def faults(self, **values: Any) -> None:
        httpx.post(self.url + "/_sim/faults", json=values, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.url + "/_sim/reset", timeout=5).raise_for_status()

    def ps(self) -> list[str]:
        return [m["name"] for m in httpx.get(self.url + "/api/ps", timeout=5).json()["models"]]


@contextmanager
def start_sim(*args: str, port: int | None = None, timeout: float = 15.0) -> Iterator[Sim]:
    port = port or free_port()
    log = tempfile.NamedTemporaryFile(prefix="corral-sim-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "corral.sim", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    sim = Sim(proc, port, Path(log.name))

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"sim exited with {proc.returncode}:\n{sim.log.read_text()[-3000:]}")
        try:
            return httpx.get(sim.url + "/", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout, f"the simulator on port {port}")
        yield sim
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    """One fast node with a chat model, a thinking model, a model without tools and an embedding model."""
    models = ["llama3.2:1b", "qwen3:4b", "gemma3:1b", "nomic-embed-text", "my-encoder=embed"]
    args = [a for m in models for a in ("--model", m)]
    with start_sim(*args, *FAST, "--parallel", "4") as node:
        yield node


@pytest.fixture
def clean(sim: Sim) -> Iterator[Sim]:
    """The shared node with counters and faults cleared before and after the test."""
    sim.reset()
    yield sim
    sim.reset()
