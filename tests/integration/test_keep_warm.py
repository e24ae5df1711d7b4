"""Keep-warm against a real `corral sim` node (residency.keep_warm, without the residency controller):
a model loaded with a short keep_alive stays loaded past it while the node has free room, and once
another model fills the node it is no longer refreshed and expires as Ollama would unload it."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from tests.procs import Proc, running, start_corral, start_sim, wait_for

A, B = "llama3.2:1b", "qwen2.5:0.5b"


def expiries(sim: Proc) -> dict[str, float]:
    """Loaded model -> when the node will unload it (unix seconds), as its /api/ps says."""
    models = httpx.get(sim.url + "/api/ps", timeout=5).json()["models"]
    return {m["name"]: datetime.fromisoformat(m["expires_at"]).timestamp() for m in models}


def residency(corral: Proc) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(corral.url + "/internal/status", timeout=5).json()["residency"]
    return data


def test_an_idle_model_stays_warm_while_the_node_has_room_and_expires_once_it_is_full() -> None:
    # Two runners at most: with A alone there is room; with A and B the node is full.
    sim = start_sim(A, B, extra=["--max-loaded", "2", "--load-seconds", "0.1", "--keep-alive", "5m"])
    with running(sim):
        corral = start_corral(
            {
                "backends": [{"name": "a", "url": sim.url, "max_loaded": 2}],
                "routing": {"discovery_interval_s": 0.2},
                # The refresh sends 12s, due 10 s before a runner's expiry; residency.enabled stays off.
                "residency": {"keep_warm": True, "interval_s": 0.2, "keep_alive": "12s", "keep_warm_margin_s": 10},
            }
        )
        with running(corral), httpx.Client(base_url=corral.url, timeout=30) as http:
            assert residency(corral)["enabled"] is False and residency(corral)["keep_warm"] is True
            body = {"model": A, "prompt": "hi", "stream": False, "keep_alive": "12s", "options": {"num_predict": 3}}
            assert http.post("/api/generate", json=body).status_code == 200
            first = expiries(sim)[A]
            # Past the keep_alive the client asked for, A is still loaded: refreshed while the node has room.
            wait_for(lambda: time.time() > first + 3, 25, "A's first keep-alive to pass")
            assert A in expiries(sim)
            assert expiries(sim)[A] > time.time() + 5
            refreshed = residency(corral)["refreshed"]
            assert refreshed >= 1
            shown = residency(corral)["decisions"][0]
            assert (shown["action"], shown["model"], shown["keep_alive"]) == ("refresh", A, "12s")

            # B fills the node: A's room may be wanted now, so it is left to expire at its keep-alive.
            assert http.post("/api/generate", json={**body, "model": B}).status_code == 200
            wait_for(lambda: A not in expiries(sim), 20, "A to expire once the node is full")
