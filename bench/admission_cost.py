"""What a freed slot costs the admission queue: `python -m bench.admission_cost`.

A saturated fleet (every node at its `max_concurrency` of 1), a queue of waiting requests spread over
twelve models, then slots freed one at a time: each `capacity_changed(node)` offers the slot to the
waiting requests that node can take. The cost per freed slot should grow with the queue, not with the
fleet (before the admission rework it rebuilt the whole fleet snapshot for every queued entry).
"""

from __future__ import annotations

import asyncio
import random
import time

from corral.app.admission import Admission
from corral.app.context import RequestRecord
from corral.app.fleet import Fleet, Node
from corral.config import BackendSettings, HealthSettings
from corral.domain.breaker import CircuitBreaker
from corral.domain.fleet import RouteRequest
from corral.domain.routing import make_strategy

MODELS = [f"m{i}:7b" for i in range(12)]
FREES = 2000


def build_fleet(size: int, rng: random.Random) -> Fleet:
    fleet = Fleet()
    for i in range(size):
        settings = BackendSettings(name=f"n{i}", url=f"http://127.0.0.1:{20000 + i}", max_concurrency=1)
        node = fleet.add(settings, HealthSettings(), CircuitBreaker(5, 0.5, 20, 10, 10.0))
        node.checked = True
        node.set_tags({m: {"name": m, "size": 4_700_000_000} for m in rng.sample(MODELS, 4)})
        node.begin("")  # full: every request below has to wait
    return fleet


async def measure(size: int, queued: int, strategy_name: str) -> float:
    rng = random.Random(size)
    fleet = build_fleet(size, rng)
    admission = Admission(fleet, make_strategy(strategy_name, random.Random(0)), queued + FREES, 3600.0)
    waiters = []
    for i in range(queued + FREES):
        record = RequestRecord(str(i), "POST", "/api/generate", f"10.0.{i % 50}.1", 0.0)
        route = RouteRequest(rng.choice(MODELS))
        waiters.append(asyncio.ensure_future(admission.choose(route, record)))
    await asyncio.sleep(0)
    nodes: list[Node] = list(fleet)
    elapsed = 0.0
    for i in range(FREES):
        node = nodes[i % len(nodes)]
        if node.in_flight:
            node.end("")
        started = time.perf_counter()
        admission.capacity_changed(node)
        elapsed += time.perf_counter() - started
        await asyncio.sleep(0)  # the admitted waiter runs (and would send its request)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    return elapsed / FREES * 1e6


def main() -> None:
    print("| nodes | queued | strategy | µs per freed slot |")
    print("|---|---|---|---|")
    for strategy in ("least-connections", "model-aware"):
        for queued in (50, 500):
            for size in (4, 64, 256):
                micros = asyncio.run(measure(size, queued, strategy))
                print(f"| {size} | {queued} | {strategy} | {micros:.0f} |")


if __name__ == "__main__":
    main()
