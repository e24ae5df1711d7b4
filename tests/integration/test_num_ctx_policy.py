"""`models.<name>.num_ctx` against a real `corral sim` node: one runner for every request of a model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.procs import Proc, running, sim_stats, start_corral, start_sim


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[Proc, Proc]]:
    sim = start_sim("llama3.2:1b", "qwen2.5:0.5b", "gemma3:270m", extra=["--load-seconds", "0.01"])
    with running(sim):
        corral = start_corral(
            {
                "backends": [{"name": "a", "url": sim.url, "max_loaded": 3}],
                "models": {"llama3.2:1b": {"num_ctx": "normalize"}, "qwen2.5:0.5b": {"num_ctx": "cap 2048"}},
            }
        )
        with running(corral):
            yield corral, sim


def context(sim: Proc, model: str) -> int:
    models = httpx.get(sim.url + "/api/ps", timeout=5).json()["models"]
    return int(next(m["context_length"] for m in models if m["name"] == model))


def generate(corral: Proc, model: str, options: dict[str, Any]) -> None:
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 2, **options}}
    reply = httpx.post(corral.url + "/api/generate", json=body, timeout=30)
    assert reply.status_code == 200, reply.text


def test_normalize_serves_every_num_ctx_and_v1_from_one_runner(gateway: tuple[Proc, Proc]) -> None:
    corral, sim = gateway
    generate(corral, "llama3.2:1b", {})
    default = context(sim, "llama3.2:1b")
    before = sim_stats(sim)
    for options in ({"num_ctx": 8192}, {"num_ctx": 2048.0}, {}, {"num_ctx": 32768, "seed": 3}):
        generate(corral, "llama3.2:1b", options)
    chat = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(corral.url + "/v1/chat/completions", json=chat, timeout=30).status_code == 200
    after = sim_stats(sim)
    assert (after["loads"], after["reloads"]) == (before["loads"], before["reloads"])
    assert context(sim, "llama3.2:1b") == default


def test_cap_lowers_only_what_is_above_it_and_other_models_keep_theirs(gateway: tuple[Proc, Proc]) -> None:
    corral, sim = gateway
    generate(corral, "qwen2.5:0.5b", {"num_ctx": 8192})
    assert context(sim, "qwen2.5:0.5b") == 2048
    generate(corral, "qwen2.5:0.5b", {"num_ctx": 1024})
    assert context(sim, "qwen2.5:0.5b") == 1024
    generate(corral, "gemma3:270m", {"num_ctx": 8192})  # no policy: as the client asked
    assert context(sim, "gemma3:270m") == 8192


def test_a_wrong_type_is_still_refused_not_dropped(gateway: tuple[Proc, Proc]) -> None:
    corral, _ = gateway
    body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"num_ctx": "big"}}
    reply = httpx.post(corral.url + "/api/generate", json=body, timeout=30)
    assert reply.status_code == 400 and "num_ctx" in reply.json()["error"]


def test_x_corral_node_holds_a_model_request_to_that_node(gateway: tuple[Proc, Proc]) -> None:
    corral, _ = gateway
    body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    held = httpx.post(corral.url + "/api/generate", json=body, headers={"x-corral-node": "a"}, timeout=30)
    assert held.status_code == 200
    nowhere = httpx.post(corral.url + "/api/generate", json=body, headers={"x-corral-node": "zz"}, timeout=30)
    assert nowhere.status_code == 404 and "no node named 'zz'" in nowhere.json()["error"]
