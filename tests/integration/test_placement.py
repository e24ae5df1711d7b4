"""Placement against real `corral sim` nodes: a model never lost to a node that cannot hold it.

A sim started with `--memory-gb` refuses to load bigger models with Ollama's own 500 ("model requires
more system memory ... than is available"), as a node with too little memory does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from procs import Proc, sim_stats, start_corral, start_sim

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0.05"]
BIG = "big:8b"  # about 4.6 GiB on disk in the sim's catalogue
HEALTH = {"interval_s": 0.5, "timeout_s": 1, "rise": 1, "fall": 2}


def generate(corral: Proc, model: str = BIG, stream: bool = False) -> httpx.Response:
    body = {"model": model, "prompt": "hello", "stream": stream, "options": {"num_predict": 2}}
    return httpx.post(corral.url + "/api/generate", json=body, timeout=30)


def generate_calls(sim: Proc) -> int:
    requests: dict[str, Any] = sim_stats(sim)["requests"]
    return int(requests.get("/api/generate", 0))


@pytest.fixture
def small_and_big() -> Iterator[tuple[Proc, Proc]]:
    small = start_sim(BIG, "tiny:1b", extra=[*FAST, "--memory-gb", "2"])
    big = start_sim(BIG, "tiny:1b", extra=FAST)
    yield small, big
    small.stop()
    big.stop()


def fleet(small: Proc, big: Proc, strategy: str, vram_gb: float | None = None) -> Proc:
    first: dict[str, Any] = {"name": "small", "url": small.url}
    if vram_gb is not None:
        first["vram_gb"] = vram_gb
    return start_corral(
        {
            "backends": [first, {"name": "big", "url": big.url}],
            "health": HEALTH,
            "routing": {"strategy": strategy, "retry_backoff_s": 0.01},
        }
    )


@pytest.mark.parametrize("strategy", ["round-robin", "model-aware"])
def test_a_refused_load_is_retried_elsewhere_and_the_node_is_learnt(
    small_and_big: tuple[Proc, Proc], strategy: str
) -> None:
    small, big = small_and_big
    corral = fleet(small, big, strategy)
    try:
        replies = [generate(corral, stream=i % 2 == 1) for i in range(8)]
        assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies]
        assert {r.headers["x-corral-node"] for r in replies} == {"big"}
        # At most the one refusal that taught it: afterwards the small node is not tried for the model.
        assert generate_calls(small) <= 1
        # Other models still go to the small node (round-robin alternates them).
        if strategy == "round-robin":
            tiny = [generate(corral, "tiny:1b").headers["x-corral-node"] for _ in range(4)]
            assert "small" in tiny
    finally:
        corral.stop()


def test_configured_memory_keeps_a_model_off_a_node_too_small(small_and_big: tuple[Proc, Proc]) -> None:
    small, big = small_and_big
    corral = fleet(small, big, "round-robin", vram_gb=2)
    try:
        replies = [generate(corral) for _ in range(6)]
        assert [r.status_code for r in replies] == [200] * 6
        assert generate_calls(small) == 0  # never sent a load it would refuse
    finally:
        corral.stop()


def test_when_no_node_fits_the_nodes_own_error_is_passed_on(small_and_big: tuple[Proc, Proc]) -> None:
    small, _big = small_and_big
    corral = start_corral({"backends": [{"name": "small", "url": small.url}], "health": HEALTH})
    try:
        for _ in range(2):  # the second try is not refused by Corral either: never stricter than Ollama
            reply = generate(corral)
            assert reply.status_code == 500
            assert "requires more system memory" in reply.json()["error"]
        assert generate_calls(small) == 2
    finally:
        corral.stop()
