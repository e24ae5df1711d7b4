"""Shedding by estimated wait (`queue.shed_after_s`, docs/routing.md) against real processes: a `corral sim`
node with one slot, held by a long generation, and `corral serve` with model-aware routing."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from procs import Proc, sim_stats, single_process, start_corral, start_sim, wait_for

# 20 tokens/s: a 100,000-token generation holds the node's only slot for the whole test.
SLOW = ["--tokens-per-second", "20", "--load-seconds", "0", "--parallel", "1"]
HEALTH = {"interval_s": 0.2, "timeout_s": 1, "rise": 1, "fall": 2}
CHAT = {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}]}


def node_status(corral: Proc) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(corral.url + "/internal/status", timeout=5).json()["nodes"][0]
    return data


@pytest.fixture
def one_slot() -> Iterator[tuple[Proc, Proc]]:
    sim = start_sim("m:1b", extra=SLOW)
    corral: Proc | None = None
    try:
        corral = start_corral(
            {
                "backends": [{"name": "one", "url": sim.url, "parallel": 1}],
                "health": HEALTH,
                "routing": {"strategy": "model-aware", "discovery_interval_s": 0.5},
                "queue": {"shed_after_s": 1},
            }
        )
        c = corral
        wait_for(lambda: node_status(c)["state"] == "up" and node_status(c)["models"], 15, "the node up with its model")
        yield corral, sim
    finally:
        for proc in (corral, sim):
            if proc is not None:
                proc.stop()


def reload_with(corral: Proc, queue: dict[str, Any]) -> None:
    """Rewrite the running config's queue section, SIGHUP, and wait for the reload's result."""
    path: Path = corral.config_path  # type: ignore[attr-defined]
    config = yaml.safe_load(path.read_text())
    config["queue"] = queue
    path.with_suffix(".tmp").write_text(yaml.safe_dump(config))
    os.replace(path.with_suffix(".tmp"), path)

    def last() -> Any:
        return httpx.get(corral.url + "/internal/status", timeout=5).json()["config"]["last_reload"]

    before = last()
    corral.proc.send_signal(signal.SIGHUP)
    result = wait_for(lambda: (r := last()) is not None and r != before and r, 15, "the reload's result")
    assert result["result"] == "ok", result


def chats(sim: Proc) -> int:
    requests = sim_stats(sim)["requests"]
    return int(requests.get("/api/chat", 0)) + int(requests.get("/v1/chat/completions", 0))


@single_process("in-flight counts are per worker: another worker would see the slot free (docs/deploy.md)")
def test_a_request_that_would_wait_past_the_bound_is_refused_at_once(one_slot: tuple[Proc, Proc]) -> None:
    corral, sim = one_slot
    short = {**CHAT, "stream": False, "options": {"num_predict": 3}}
    # The model is loaded nowhere yet: its first load is sent whatever its estimate (else never served).
    assert httpx.post(corral.url + "/api/chat", json=short, timeout=30).status_code == 200
    # A free slot is never shed, however tight the bound.
    assert httpx.post(corral.url + "/api/chat", json=short, timeout=30).status_code == 200
    long = {**CHAT, "stream": True, "options": {"num_predict": 100_000}}
    with httpx.stream("POST", corral.url + "/api/chat", json=long, timeout=60) as held:
        assert held.status_code == 200
        lines = held.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)  # the first token is out: the node's only slot is taken, for about 80 minutes
        sent = chats(sim)

        native = httpx.post(corral.url + "/api/chat", json=short, timeout=30)
        assert native.status_code == 503, native.text
        assert 1 <= int(native.headers["retry-after"]) <= 60
        error = native.json()
        assert list(error) == ["error"]
        assert error["error"].startswith("server busy, please try again.")  # as Ollama's own 503
        assert "'m:1b' would wait about" in error["error"] and "queue.shed_after_s is 1s" in error["error"]

        v1 = httpx.post(corral.url + "/v1/chat/completions", json={**CHAT, "max_tokens": 3}, timeout=30)
        assert v1.status_code == 503 and "retry-after" in v1.headers
        body = v1.json()["error"]
        assert body["code"] == "overloaded" and body["message"].startswith("server busy, please try again.")

        client = openai.OpenAI(base_url=corral.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        with pytest.raises(openai.InternalServerError) as raised:  # the SDK's class for any 5xx
            client.chat.completions.create(model="m:1b", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert raised.value.status_code == 503 and "server busy" in raised.value.message

        assert chats(sim) == sent  # none of them reached the node's queue
        assert not held.is_closed  # refused while the slot was still taken, not after it freed

    # The held stream is closed: once the gateway has let go of the slot, requests are served again.
    wait_for(lambda: node_status(corral)["in_flight"] == 0, 15, "the slot freed")
    assert httpx.post(corral.url + "/api/chat", json=short, timeout=30).status_code == 200
    metrics = httpx.get(corral.url + "/metrics", timeout=5).text
    assert 'corral_errors_total{kind="overloaded",route="/api/chat"} 1.0' in metrics
    assert 'corral_errors_total{kind="overloaded",route="/v1/chat/completions"} 2.0' in metrics


@single_process("in-flight counts are per worker: another worker would see the slot free (docs/deploy.md)")
def test_a_reload_turns_shedding_off_and_on(one_slot: tuple[Proc, Proc]) -> None:
    corral, sim = one_slot
    short = {**CHAT, "stream": False, "options": {"num_predict": 3}}
    assert httpx.post(corral.url + "/api/chat", json=short, timeout=30).status_code == 200  # loads the model
    reload_with(corral, {})  # shedding off: requests wait in the node's queue again
    long = {**CHAT, "stream": True, "options": {"num_predict": 100_000}}
    with ThreadPoolExecutor(1) as pool:
        with httpx.stream("POST", corral.url + "/api/chat", json=long, timeout=60) as held:
            lines = held.iter_lines()
            next(lines)
            sent = chats(sim)
            queued = pool.submit(httpx.post, corral.url + "/api/chat", json=short, timeout=60)
            wait_for(lambda: chats(sim) == sent + 1, 15, "the request sent on to the busy node")
            assert not queued.done()  # waiting in the node's queue, not refused
        assert queued.result(timeout=30).status_code == 200  # served once the slot freed
    wait_for(lambda: node_status(corral)["in_flight"] == 0, 15, "the slot freed")
    reload_with(corral, {"shed_after_s": 1})  # on again
    with httpx.stream("POST", corral.url + "/api/chat", json=long, timeout=60) as held:
        lines = held.iter_lines()
        next(lines)
        assert httpx.post(corral.url + "/api/chat", json=short, timeout=30).status_code == 503


def test_shedding_off_by_default_lets_the_request_wait_in_the_nodes_queue() -> None:
    sim = start_sim("m:1b", extra=["--tokens-per-second", "200", "--load-seconds", "0", "--parallel", "1"])
    corral: Proc | None = None
    try:
        corral = start_corral({"backends": [{"name": "one", "url": sim.url, "parallel": 1}], "health": HEALTH})
        c = corral
        wait_for(lambda: node_status(c)["state"] == "up" and node_status(c)["models"], 15, "the node up with its model")
        held_body = {**CHAT, "stream": True, "options": {"num_predict": 200}}  # about a second
        with httpx.stream("POST", corral.url + "/api/chat", json=held_body, timeout=60) as held:
            lines = held.iter_lines()
            next(lines)
            reply = httpx.post(corral.url + "/api/chat", json={**CHAT, "stream": False}, timeout=60)
            assert reply.status_code == 200  # queued behind the first one on the node
            for _ in lines:
                pass
    finally:
        for proc in (corral, sim):
            if proc is not None:
                proc.stop()
