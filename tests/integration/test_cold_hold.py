"""Cold models held at the gateway (routing.hold_cold) against a real `corral sim` node: while the node's
loader is busy with another model, requests for a model it does not hold wait in Corral, not in the
node's queue; when the loader frees they go together (one load), and a request for a model the node
holds is served meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.procs import Proc, running, sim_stats, start_corral, start_sim, wait_for

WARM, BIG, COLD = "llama3.2:1b", "llama3.1:70b", "qwen2.5:0.5b"
LOAD_S = 6.0  # the node's load time: the window in which its loader is busy


@contextmanager
def node_and_corral(max_wait_s: float = 60) -> Iterator[tuple[Proc, Proc]]:
    extra = ["--load-seconds", str(LOAD_S), "--parallel", "4", "--max-loaded", "3", "--tokens-per-second", "50"]
    sim = start_sim(WARM, BIG, COLD, extra=extra)
    with running(sim):
        corral = start_corral(
            {
                "backends": [{"name": "a", "url": sim.url, "parallel": 4, "max_loaded": 3}],
                "routing": {"hold_cold": True, "discovery_interval_s": 0.2},
                "queue": {"max_len": 16, "max_wait_s": max_wait_s},
            }
        )
        with running(corral):
            yield sim, corral


def waiting(corral: Proc) -> int:
    return int(httpx.get(corral.url + "/internal/status", timeout=5).json()["queue"]["waiting"])


def sent(corral: Proc) -> int:
    """Requests Corral has sent to its node and not seen finish."""
    return int(httpx.get(corral.url + "/internal/status", timeout=5).json()["nodes"][0]["in_flight"])


def generate(http: httpx.Client, model: str, results: list[Any], stream: bool = False) -> None:
    body = {"model": model, "prompt": "hi", "stream": stream, "options": {"num_predict": 5}}
    response = http.post("/api/generate", json=body)
    results.append((model, response.status_code, response.text))


def test_cold_requests_wait_in_the_gateway_and_share_one_load_while_a_resident_model_is_served() -> None:
    results: list[Any] = []
    with node_and_corral() as (sim, corral), httpx.Client(base_url=corral.url, timeout=60) as http:
        generate(http, WARM, results)  # WARM is resident from now on
        assert results[-1][1] == 200 and sim_stats(sim)["loads"] == 1
        # The node's loader takes BIG (a request that streams: its first token frees the loader).
        threads = [threading.Thread(target=generate, args=(http, BIG, results, True))]
        threads[0].start()
        wait_for(lambda: sent(corral) == 1, 10, "the big model's request to be sent")
        # Four requests for COLD while the loader is busy: held in Corral, not sent to the node.
        for _ in range(4):
            threads.append(threading.Thread(target=generate, args=(http, COLD, results)))
            threads[-1].start()
        wait_for(lambda: waiting(corral) == 4, LOAD_S, "the cold requests to be held")
        # A request for the resident model is answered while they wait.
        served: list[Any] = []
        generate(http, WARM, served)
        assert served[0][1] == 200
        assert waiting(corral) == 4 and sim_stats(sim)["loads"] == 1  # still held; BIG still loading
        for t in threads:
            t.join(60)
        assert sorted((m, s) for m, s, _ in results) == sorted([(WARM, 200), (BIG, 200)] + [(COLD, 200)] * 4)
        assert sim_stats(sim)["loads"] == 3  # WARM, BIG, and one load of COLD for its four requests
        assert waiting(corral) == 0


def test_a_held_request_that_waits_too_long_gets_the_queues_503() -> None:
    # A cold request held past queue.max_wait_s is answered 503 with Retry-After, in Ollama's error shape,
    # never left hanging.
    with node_and_corral(max_wait_s=0.5) as (_, corral), httpx.Client(base_url=corral.url, timeout=60) as http:
        big: list[Any] = []
        thread = threading.Thread(target=generate, args=(http, BIG, big, True))
        thread.start()
        wait_for(lambda: sent(corral) == 1, 10, "the big model's request to be sent")
        response = http.post("/api/generate", json={"model": COLD, "prompt": "hi", "stream": False})
        thread.join(60)
    assert response.status_code == 503
    assert "retry-after" in response.headers
    error = response.json()["error"]
    assert COLD in error and "0.5s" in error
    assert big[0][1] == 200
