"""A small real fleet shared by the tests: `corral sim` nodes and one `corral serve`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from procs import Fleet, Proc, start_corral, start_sim, wait_for


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    fast = ["--tokens-per-second", "2000", "--load-seconds", "0.05"]
    procs: list[Proc] = []
    try:
        a = start_sim("llama3.2:1b", "qwen2.5:7b", "nomic-embed-text", extra=[*fast, "--parallel", "4"])
        procs.append(a)
        b = start_sim("llama3.2:1b", "llama3.1:8b", extra=[*fast, "--parallel", "4"])
        procs.append(b)
        slow = start_sim("slow:1b", extra=["--tokens-per-second", "20", "--load-seconds", "0.05"])
        procs.append(slow)
        faulty = start_sim("faulty:1b", extra=fast)
        procs.append(faulty)
        oa = start_sim("remote:7b", extra=fast)  # spoken to through its OpenAI-compatible routes only
        procs.append(oa)
        config = {
            "backends": [
                {"name": "node-a", "url": a.url, "parallel": 4},
                {"name": "node-b", "url": b.url, "parallel": 4},
                {"name": "node-slow", "url": slow.url},
                {"name": "node-faulty", "url": faulty.url},
                {"name": "node-oa", "url": oa.url, "type": "openai"},
            ],
            "health": {"interval_s": 0.5, "timeout_s": 2, "rise": 1, "fall": 2},
            "routing": {"discovery_interval_s": 1, "retries": 2},
        }
        corral = start_corral(config)
        procs.append(corral)

        def all_up() -> bool:
            status = httpx.get(corral.url + "/internal/status", timeout=2).json()
            return all(n["state"] == "up" and n["models"] for n in status["nodes"])

        wait_for(all_up, 15, "every node up with its models discovered")
        yield Fleet(corral, a, b, slow, faulty, oa)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture
def faulty(fleet: Fleet) -> Iterator[Proc]:
    """The faulty node, with its faults cleared again after the test."""
    yield fleet.faulty
    httpx.post(fleet.faulty.url + "/_sim/reset", timeout=5)
