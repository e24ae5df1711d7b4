"""Residency control against real `corral sim` nodes: a model that turns hot (closed-loop clients
queue on its one replica, many times its slots, on an otherwise idle fleet: a surge, with the default
thresholds) gets another on a node with free room, pinned with keep_alive -1, and is unpinned once it
cools."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.procs import Proc, running, start_corral, start_sim, wait_for

MODEL = "llama3.2:1b"


@pytest.fixture
def fleet() -> Iterator[tuple[Proc, Proc, Proc]]:
    extra = ["--parallel", "1", "--load-seconds", "0.2", "--tokens-per-second", "40"]
    a, b = start_sim(MODEL, "qwen2.5:0.5b", extra=extra), start_sim(MODEL, "qwen2.5:0.5b", extra=extra)
    with running(a, b):
        corral = start_corral(
            {
                "backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}],
                "routing": {"discovery_interval_s": 0.2},
                "residency": {
                    "enabled": True,
                    "interval_s": 0.2,
                    "window_s": 1,
                    "trend_window_s": 30,
                    # The nodes load in 0.2 s, while routing's prior for a load is seconds (it learns the
                    # nodes' speed from loads it times): a queue of seconds is a fraction of that prior.
                    "hot": 0.3,
                    "cool": 0.1,
                    "cool_s": 1,
                    "keep_alive": "4m",
                },
            }
        )
        with running(corral):
            yield corral, a, b


def status(corral: Proc) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(corral.url + "/internal/status", timeout=5).json()["residency"]
    return data


def expiry_s(sim: Proc) -> float | None:
    """Seconds until the node unloads the model (None: not loaded)."""
    for m in httpx.get(sim.url + "/api/ps", timeout=5).json()["models"]:
        if m["name"] == MODEL:
            return datetime.fromisoformat(m["expires_at"]).timestamp() - time.time()
    return None


def test_a_hot_model_gets_a_pinned_replica_and_is_unpinned_when_it_cools(fleet: tuple[Proc, Proc, Proc]) -> None:
    corral, a, b = fleet
    stop = threading.Event()
    body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 20}}
    # Some history first: another model, one request at a time (each takes half a second). MODEL's usual
    # rate is then nil, so its traffic below is a turn (a model at the same rate from the start is
    # steady traffic, which routing places: the controller only pins it).
    with httpx.Client(base_url=corral.url, timeout=30) as http:
        for _ in range(10):
            other = {**body, "model": "qwen2.5:0.5b"}
            assert http.post("/api/generate", json=other).status_code == 200

    def client() -> None:
        # Held on node a (X-Corral-Node), so only the controller can put the model on b.
        with httpx.Client(base_url=corral.url, headers={"x-corral-node": "a"}, timeout=30) as http:
            while not stop.is_set():
                assert http.post("/api/generate", json=body).status_code == 200

    clients = [threading.Thread(target=client) for _ in range(8)]
    for t in clients:
        t.start()
    try:
        wait_for(lambda: (e := expiry_s(b)) is not None and e > 10 * 365 * 86400, 20, "a pinned replica on b")
        state = status(corral)
        # The replica it loaded is pinned; routing's own copy on a is left to routing.
        assert state["enabled"] and state["pinned"][MODEL] == ["b"]
        assert ("preload", "b") in {(d["action"], d["node"]) for d in state["decisions"]}
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    # Quiet for cool_s: both replicas go back to the configured keep_alive, and stay loaded.
    wait_for(lambda: status(corral)["pinned"] == {}, 20, "unpinned")
    wait_for(lambda: (e := expiry_s(b)) is not None and e <= 240, 10, "keep_alive 4m again on b")
    assert expiry_s(a) is not None  # a's copy is still loaded


def test_off_by_default_and_shown_as_off(tmp_path: Any) -> None:
    sim = start_sim(MODEL)
    with running(sim):
        corral = start_corral({"backends": [{"name": "a", "url": sim.url}]})
        with running(corral):
            assert status(corral) == {"enabled": False}
