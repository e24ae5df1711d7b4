"""Fleet routing against real `corral sim` processes: failover, health, draining, run-time changes,
timeouts, concurrency caps, the admission queue and model-aware placement."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from procs import Proc, sim_stats, single_process, start_corral, start_sim, wait_for

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0.05"]
HEALTH = {"interval_s": 0.2, "timeout_s": 1, "rise": 1, "fall": 2}


def status(corral: Proc) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(corral.url + "/internal/status", timeout=5).json()
    return data


def node_state(corral: Proc, name: str) -> str:
    return next(n["state"] for n in status(corral)["nodes"] if n["name"] == name)


def generate(corral: Proc, model: str = "m:1b", **extra: Any) -> httpx.Response:
    body = {"model": model, "prompt": "hello", "stream": False, "options": {"num_predict": 2}, **extra}
    return httpx.post(corral.url + "/api/generate", json=body, timeout=30)


@pytest.fixture
def pair() -> Iterator[tuple[Proc, Proc, Proc]]:
    a = start_sim("m:1b", extra=FAST)
    b = start_sim("m:1b", extra=FAST)
    corral = start_corral(
        {
            "backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}],
            "health": HEALTH,
            "routing": {"strategy": "round-robin", "discovery_interval_s": 0.5},
            "timeouts": {"first_byte_s": 2},
        }
    )
    yield corral, a, b
    for proc in (corral, a, b):
        proc.stop()


def test_a_killed_node_fails_over_and_is_marked_down(pair: tuple[Proc, Proc, Proc]) -> None:
    corral, a, _b = pair
    a.stop(sig_kill=True)
    replies = [generate(corral) for _ in range(8)]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert all(r.headers["x-corral-node"] == "b" for r in replies)
    wait_for(lambda: node_state(corral, "a") == "down", 3, "node a to be marked down")  # fall 2 x 0.2 s
    assert httpx.get(corral.url + "/ready").status_code == 200


def test_all_nodes_down_is_a_clear_503(pair: tuple[Proc, Proc, Proc]) -> None:
    corral, a, b = pair
    a.stop(sig_kill=True)
    b.stop(sig_kill=True)
    reply = generate(corral)
    assert reply.status_code in (502, 503)
    wait_for(lambda: httpx.get(corral.url + "/ready").status_code == 503, 3, "readiness to fail")
    reply = generate(corral)
    assert reply.status_code == 503
    assert "no healthy node" in reply.json()["error"]
    assert reply.headers.get("retry-after")
    v1 = httpx.post(
        corral.url + "/v1/chat/completions", json={"model": "m:1b", "messages": [{"role": "user", "content": "x"}]}
    )
    assert v1.status_code == 503 and v1.json()["error"]["type"] == "api_error"


def test_a_drained_node_gets_no_new_requests(pair: tuple[Proc, Proc, Proc]) -> None:
    corral, a, _b = pair
    assert httpx.post(corral.url + "/admin/backends/a/drain").json()["state"] == "draining"
    before = sim_stats(a)["requests"].get("/api/generate", 0)
    assert all(generate(corral).headers["x-corral-node"] == "b" for _ in range(6))
    assert sim_stats(a)["requests"].get("/api/generate", 0) == before
    httpx.post(corral.url + "/admin/backends/a/undrain")
    assert {generate(corral).headers["x-corral-node"] for _ in range(6)} == {"a", "b"}


def test_nodes_added_and_removed_at_run_time(pair: tuple[Proc, Proc, Proc]) -> None:
    corral, _a, _b = pair
    c = start_sim("other:3b", extra=FAST)
    try:
        assert generate(corral, "other:3b").status_code == 404
        added = httpx.post(corral.url + "/admin/backends", json={"name": "c", "url": c.url})
        assert added.status_code == 201
        reply = generate(corral, "other:3b")
        assert reply.status_code == 200 and reply.headers["x-corral-node"] == "c"
        bad = httpx.post(corral.url + "/admin/backends", json={"name": "d", "url": "ftp://x"})
        assert bad.status_code == 400 and "url" in bad.json()["error"]
        dup = httpx.post(corral.url + "/admin/backends", json={"name": "c", "url": c.url})
        assert dup.status_code == 400
        assert httpx.delete(corral.url + "/admin/backends/c").status_code == 200
        assert generate(corral, "other:3b").status_code == 404
        assert httpx.delete(corral.url + "/admin/backends/c").status_code == 404
    finally:
        c.stop()


def test_a_flapping_node_goes_down_and_comes_back(pair: tuple[Proc, Proc, Proc]) -> None:
    corral, a, _b = pair
    port = a.port
    for _ in range(2):
        a.stop(sig_kill=True)
        wait_for(lambda: node_state(corral, "a") == "down", 3, "node a down")
        a = start_sim("m:1b", port=port, extra=FAST)
        wait_for(lambda: node_state(corral, "a") == "up", 3, "node a up again")
    assert {generate(corral).headers["x-corral-node"] for _ in range(6)} == {"a", "b"}
    a.stop()


def test_a_node_that_accepted_a_request_is_never_replayed_elsewhere() -> None:
    """A hung node gets the request and never answers: the client gets a 504 after the timeout that fits
    its request (first byte for a stream, whole answer otherwise), and the request is not sent again to
    another node, where the work would be done twice."""
    hung = start_sim("m:1b", extra=[*FAST, "--hang"])
    good = start_sim("m:1b", extra=FAST)
    corral = start_corral(
        {
            "backends": [{"name": "hung", "url": hung.url, "priority": 10}, {"name": "good", "url": good.url}],
            "health": HEALTH,
            "routing": {"strategy": "priority"},
            "timeouts": {"first_byte_s": 0.5, "answer_s": 1.0},
        }
    )
    try:
        httpx.post(corral.url + "/admin/backends", json={})  # harmless bad input: 400, not a crash
        started = time.monotonic()
        whole = generate(corral)
        assert whole.status_code == 504 and time.monotonic() - started >= 1.0
        streamed = generate(corral, stream=True)
        assert streamed.status_code == 504 and "no response within 0.5s" in streamed.json()["error"]
        assert sim_stats(good)["requests"].get("/api/generate", 0) == 0
    finally:
        for proc in (corral, hung, good):
            proc.stop()


def test_concurrency_caps_are_never_exceeded() -> None:
    sims = [
        start_sim("m:1b", extra=["--tokens-per-second", "200", "--load-seconds", "0", "--parallel", "8"])
        for _ in range(2)
    ]
    corral = start_corral(
        {
            "backends": [
                {"name": f"n{i}", "url": s.url, "max_concurrency": 2, "parallel": 8} for i, s in enumerate(sims)
            ],
            "queue": {"max_len": 100, "max_wait_s": 30},
        }
    )
    try:
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda _: generate(corral, options={"num_predict": 10}), range(24)))
        assert all(r.status_code == 200 for r in replies)
        for sim in sims:
            assert sim_stats(sim)["max_in_flight"] <= 2
        assert sum(sim_stats(s)["requests"].get("/api/generate", 0) for s in sims) == 24
    finally:
        for proc in (corral, *sims):
            proc.stop()


@single_process("a node cap below the worker count: each worker keeps one slot and its own queue (docs/deploy.md)")
def test_the_queue_is_bounded_and_fair_across_clients() -> None:
    sim = start_sim("m:1b", extra=["--tokens-per-second", "20", "--load-seconds", "0"])
    corral = start_corral(
        {
            "backends": [{"name": "one", "url": sim.url, "max_concurrency": 1}],
            "queue": {"max_len": 6, "max_wait_s": 30},
            "logging": {"access": True},
        }
    )
    order: list[str] = []
    lock = threading.Lock()

    def send(client_ip: str) -> int:
        transport = httpx.HTTPTransport(local_address=client_ip)
        with httpx.Client(transport=transport, timeout=30) as client:
            reply = client.post(
                corral.url + "/api/generate",
                json={"model": "m:1b", "prompt": "x", "stream": False, "options": {"num_predict": 20}},
            )
        if reply.status_code == 200:
            with lock:
                order.append(client_ip)
        return reply.status_code

    try:
        # One slot: a burst of 5 from one client, then 2 from another, all queued.
        with ThreadPoolExecutor(8) as pool:
            burst = [pool.submit(send, "127.0.0.1") for _ in range(5)]
            wait_for(lambda: status(corral)["queue"]["waiting"] >= 4, 10, "the burst to queue")
            late = [pool.submit(send, "127.0.0.2") for _ in range(2)]
            wait_for(lambda: status(corral)["queue"]["waiting"] >= 6, 10, "the late client to queue")
            overflow = send("127.0.0.3")
            results = [f.result() for f in burst + late]
        assert overflow == 503
        assert all(code == 200 for code in results)
        # The late client's two requests were served before the burst's tail, not after all of it.
        assert order.index("127.0.0.2") < 4 and len(order) - order[::-1].index("127.0.0.2") - 1 < 6
    finally:
        corral.stop()
        sim.stop()


def test_model_aware_keeps_a_model_on_one_node_while_it_has_free_slots() -> None:
    sims = [
        start_sim("m:1b", extra=["--tokens-per-second", "200", "--load-seconds", "0.2", "--parallel", "4"])
        for _ in range(3)
    ]
    corral = start_corral({"backends": [{"name": f"n{i}", "url": s.url, "parallel": 4} for i, s in enumerate(sims)]})
    try:
        for _ in range(10):
            assert generate(corral).status_code == 200
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda _: generate(corral), range(9)))
        loads = [sim_stats(s)["loads"] for s in sims]
        assert sorted(loads) == [0, 0, 1], loads
    finally:
        for proc in (corral, *sims):
            proc.stop()


def test_graceful_shutdown_finishes_streams_then_exits() -> None:
    sim = start_sim("m:1b", extra=["--tokens-per-second", "20", "--load-seconds", "0"])
    corral = start_corral({"backends": [{"name": "s", "url": sim.url}], "server": {"shutdown_grace_s": 10}})
    try:
        with (
            httpx.Client(timeout=30) as probe,
            httpx.stream(
                "POST",
                corral.url + "/api/generate",
                timeout=30,
                json={"model": "m:1b", "prompt": "x", "options": {"num_predict": 20}},
            ) as reply,
        ):
            assert probe.get(corral.url + "/ready").status_code == 200  # a kept-alive connection, as an LB has
            lines = reply.iter_lines()
            assert json.loads(next(lines))["done"] is False
            corral.proc.terminate()
            wait_for(lambda: probe.get(corral.url + "/ready").status_code == 503, 5, "readiness to answer 503")
            rest = [json.loads(line) for line in lines]
        assert rest[-1]["done"] is True
        assert corral.proc.wait(10) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(corral.url + "/health", timeout=2)
    finally:
        corral.stop()
        sim.stop()
