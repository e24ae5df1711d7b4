"""Loading, keep_alive, eviction, reloads, parallel slots and the pending queue (§11 items 17-20, 26;
fleet-model.md §1.2-1.5)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from tests.sim.conftest import FAST, Sim, start_sim, wait_until

BUSY = "server busy, please try again.  maximum pending requests exceeded"


def models(*names: str) -> list[str]:
    return [a for n in names for a in ("--model", n)]


def generate(sim: Sim, model: str, timeout: float = 30, **extra: Any) -> httpx.Response:
    body = {"model": model, "prompt": "x", "stream": False, "options": {"num_predict": 3}, **extra}
    return httpx.post(sim.url + "/api/generate", json=body, timeout=timeout)


def load(sim: Sim, model: str, keep_alive: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    reply = httpx.post(sim.url + "/api/generate", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def test_empty_prompt_loads_and_keep_alive_zero_unloads(sim: Sim) -> None:
    done = load(sim, "llama3.2:1b")  # stream defaults to true, and the answer is still one object
    assert done["done"] is True and done["done_reason"] == "load" and done["response"] == ""
    assert "llama3.2:1b" in sim.ps()
    gone = load(sim, "llama3.2:1b", keep_alive=0)
    assert gone["done_reason"] == "unload"
    assert "llama3.2:1b" not in sim.ps()
    chat = httpx.post(sim.url + "/api/chat", json={"model": "gemma3:1b", "messages": []}).json()
    assert chat["message"] == {"role": "assistant", "content": ""} and chat["done_reason"] == "load"
    assert "gemma3:1b" in sim.ps()
    chat = httpx.post(sim.url + "/api/chat", json={"model": "gemma3:1b", "messages": [], "keep_alive": "0s"}).json()
    assert chat["done_reason"] == "unload" and "gemma3:1b" not in sim.ps()


def expires_in(sim: Sim, model: str) -> timedelta:
    entry = next(m for m in httpx.get(sim.url + "/api/ps").json()["models"] if m["name"] == model)
    return datetime.fromisoformat(entry["expires_at"]) - datetime.now().astimezone()


@pytest.mark.parametrize("value", [300, "5m", "1h30m", -1, "-1m", 2.5])
def test_keep_alive_forms_are_accepted(sim: Sim, value: Any) -> None:
    assert load(sim, "llama3.2:1b", keep_alive=value)["done_reason"] == "load"


def test_keep_alive_sets_expires_at(sim: Sim) -> None:
    load(sim, "llama3.2:1b", keep_alive="10m")
    assert abs(expires_in(sim, "llama3.2:1b") - timedelta(minutes=10)) < timedelta(seconds=30)
    load(sim, "llama3.2:1b", keep_alive=-1)
    assert expires_in(sim, "llama3.2:1b") > timedelta(days=365 * 200)


def test_a_request_without_keep_alive_keeps_the_runners_own(sim: Sim) -> None:
    # Ollama applies OLLAMA_KEEP_ALIVE only when it loads a runner; a request without keep_alive leaves a
    # loaded runner's duration alone (server/sched.go useLoadedRunner), so a pin (-1) survives traffic.
    load(sim, "gemma3:1b", keep_alive=0)  # the module's node may hold it from another test
    assert generate(sim, "gemma3:1b").status_code == 200  # a fresh load without one: the default, 5m
    assert abs(expires_in(sim, "gemma3:1b") - timedelta(minutes=5)) < timedelta(seconds=30)
    load(sim, "llama3.2:1b", keep_alive=-1)
    assert generate(sim, "llama3.2:1b").status_code == 200
    assert generate(sim, "llama3.2:1b", stream=True).status_code == 200
    assert expires_in(sim, "llama3.2:1b") > timedelta(days=365 * 200)
    assert generate(sim, "llama3.2:1b", keep_alive="10m").status_code == 200  # one that sends it wins
    assert abs(expires_in(sim, "llama3.2:1b") - timedelta(minutes=10)) < timedelta(seconds=30)


@pytest.mark.parametrize("value", ["300", True, [1], {"a": 1}, "5 minutes"])
def test_bad_keep_alive_is_400(sim: Sim, value: Any) -> None:
    reply = httpx.post(sim.url + "/api/generate", json={"model": "llama3.2:1b", "keep_alive": value})
    assert reply.status_code == 400 and reply.json()["error"]


def test_ps_entries_have_every_field_sorted_by_expiry(sim: Sim) -> None:
    load(sim, "llama3.2:1b", keep_alive="1h")
    load(sim, "gemma3:1b", keep_alive="2h")
    entries = httpx.get(sim.url + "/api/ps").json()["models"]
    for entry in entries:
        assert {"name", "model", "size", "size_vram", "digest", "details", "expires_at", "context_length"} <= set(entry)
    stamps = [datetime.fromisoformat(e["expires_at"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)


def test_idle_model_expires_after_keep_alive() -> None:
    with start_sim(*models("m:1b"), *FAST) as node:
        assert generate(node, "m:1b", keep_alive="300ms").status_code == 200
        wait_until(lambda: node.ps() == [], 5, "the model to expire")
        assert generate(node, "m:1b", keep_alive=0).status_code == 200  # a prompt with 0: unload right after
        assert node.ps() == []
        assert node.stats()["loads"] == 2


def test_eviction_takes_the_idle_model_with_the_shortest_keep_alive() -> None:
    with start_sim(*models("a:1b", "b:1b", "c:1b"), *FAST, "--max-loaded", "2") as node:
        load(node, "a:1b", keep_alive="10m")
        load(node, "b:1b", keep_alive="5m")
        load(node, "c:1b", keep_alive="5m")
        assert sorted(node.ps()) == ["a:1b", "c:1b"]  # b went: the shortest keep_alive
        # Equal keep_alive: the blob path (the digest) decides, not recency or name. The digests of
        # a:1b, b:1b and c:1b start 76dc, 3322 and 642c: c goes although a was used before it.
        load(node, "a:1b", keep_alive="5m")
        load(node, "b:1b", keep_alive="5m")
        assert sorted(node.ps()) == ["a:1b", "b:1b"]
        assert node.stats()["evictions"] == 2


def test_with_no_idle_model_the_first_in_order_is_evicted_after_it_drains() -> None:
    with (
        start_sim(
            *models("a:1b", "b:1b", "c:1b"), "--tokens-per-second", "50", "--load-seconds", "0", "--max-loaded", "2"
        ) as node,
        ThreadPoolExecutor(3) as pool,
    ):
        long_a = pool.submit(generate, node, "a:1b", keep_alive="1h", options={"num_predict": 150})
        short_b = pool.submit(generate, node, "b:1b", keep_alive="10m", options={"num_predict": 25})
        wait_until(lambda: node.stats()["in_flight"] == 2, 10, "a and b generating")
        c = pool.submit(generate, node, "c:1b")
        assert c.result().status_code == 200
        assert short_b.done() and not long_a.done()  # c waited for b (shorter keep_alive), not for a
        assert sorted(node.ps()) == ["a:1b", "c:1b"]
        assert long_a.result().status_code == 200


def test_other_load_time_options_reload_the_model() -> None:
    with start_sim(*models("m:1b"), *FAST) as node:
        generate(node, "m:1b", options={"num_ctx": 2048, "num_predict": 1})
        ctx = [m["context_length"] for m in httpx.get(node.url + "/api/ps").json()["models"]]
        assert ctx == [2048]
        generate(node, "m:1b", options={"num_ctx": 2048, "num_gpu": -1, "temperature": 0.1, "num_predict": 1})
        assert node.stats()["loads"] == 1  # runtime options and num_gpu -1 do not reload
        generate(node, "m:1b", options={"num_ctx": 8192, "num_predict": 1})
        ctx = [m["context_length"] for m in httpx.get(node.url + "/api/ps").json()["models"]]
        assert ctx == [8192]
        stats = node.stats()
        assert (stats["loads"], stats["reloads"]) == (2, 1)


def test_requests_for_a_loading_model_share_one_load() -> None:
    with start_sim(*models("m:1b"), "--tokens-per-second", "1000", "--load-seconds", "0.5") as node:
        with ThreadPoolExecutor(5) as pool:
            replies = list(pool.map(lambda _: generate(node, "m:1b"), range(5)))
        assert all(r.status_code == 200 for r in replies)
        assert node.stats()["loads"] == 1
        assert all(r.json()["load_duration"] > 0.1e9 for r in replies)  # each waited for the load


def test_parallel_slots_are_respected() -> None:
    with start_sim(
        *models("m:1b", "nomic-embed-text"), "--tokens-per-second", "100", "--load-seconds", "0", "--parallel", "2"
    ) as node:
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: generate(node, "m:1b", options={"num_predict": 20}), range(6)))
            embeds = list(
                pool.map(
                    lambda i: httpx.post(
                        node.url + "/api/embed", json={"model": "nomic-embed-text", "input": [str(i)]}
                    ),
                    range(4),
                )
            )
        assert all(r.status_code == 200 for r in replies + embeds)
        stats = node.stats()
        assert stats["max_in_flight_by_model"]["m:1b"] == 2
        assert stats["max_in_flight_by_model"]["nomic-embed-text:latest"] == 1  # embedding models: one slot
        assert stats["in_flight"] == 0 and stats["waiting"] == 0


def test_pending_queue_overflow_is_503_and_openai_retries() -> None:
    with start_sim(*models("a:1b", "b:1b", "c:1b"), "--load-seconds", "1.5", "--max-queue", "1") as node:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(generate, node, "a:1b")
            wait_until(lambda: node.stats()["loaded"] == ["a:1b"], 5, "a loading")
            second = pool.submit(generate, node, "b:1b")
            wait_until(lambda: node.stats()["pending"] == 1, 5, "b queued")
            busy = generate(node, "c:1b")
            assert (busy.status_code, busy.json()) == (503, {"error": BUSY})
            # A request for the model being loaded attaches to it: it does not count against the queue.
            attached = pool.submit(generate, node, "a:1b")
            wait_until(lambda: node.stats()["waiting"] == 3, 5, "the second request for a attached")
            assert node.stats()["pending"] == 1
            # openai-python retries a 503 (the retry may find room in the queue by then).
            client = openai.OpenAI(base_url=node.url + "/v1", api_key="ollama", max_retries=1)
            try:
                client.chat.completions.create(model="c:1b", messages=[{"role": "user", "content": "x"}])
            except openai.InternalServerError as exc:
                assert exc.status_code == 503
            assert node.stats()["last_headers"]["x-stainless-retry-count"] == "1"
            assert attached.result().status_code == 200
            assert first.result().status_code == 200 and second.result().status_code == 200
        assert node.stats()["rejected_busy"] >= 2


def test_loads_are_serialised() -> None:
    with start_sim(*models("a:1b", "b:1b"), "--load-seconds", "0.4", "--tokens-per-second", "1000") as node:
        started = time.monotonic()
        barrier = threading.Barrier(2)

        def go(model: str) -> int:
            barrier.wait()
            return generate(node, model).status_code

        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(go, ["a:1b", "b:1b"])) == [200, 200]
        assert time.monotonic() - started >= 0.8  # two loads of 0.4 s, one after the other
