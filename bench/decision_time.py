"""How long one routing decision takes: `python -m bench.decision_time`.

Random fleets of 3, 16 and 64 nodes, twelve 7B models, three loaded per node with 0-4 requests in
flight each; 5,000 decisions per strategy and size, one core, no I/O (the strategies are pure).
"""

from __future__ import annotations

import random
import time

from corral.domain.fleet import LoadedModel, NodeView, RouteRequest
from corral.domain.routing import make_strategy

MODELS = [f"m{i}:7b" for i in range(12)]


def fleet(size: int, rng: random.Random) -> list[NodeView]:
    nodes = []
    for i in range(size):
        loaded = rng.sample(MODELS, 3)
        busy = {m: rng.randint(0, 4) for m in loaded}
        nodes.append(
            NodeView(
                f"n{i}",
                available=frozenset(MODELS),
                model_sizes=dict.fromkeys(MODELS, 4_700_000_000),
                parallel=4,
                loaded=tuple(LoadedModel(m, size=6_000_000_000, digest=m) for m in loaded),
                in_flight=sum(busy.values()),
                in_flight_by_model=busy,
            )
        )
    return nodes


def main() -> None:
    print("| nodes | strategy | µs per decision |")
    print("|---|---|---|")
    for size in (3, 16, 64):
        for name in ("least-connections", "model-aware"):
            rng = random.Random(size)
            nodes = fleet(size, rng)
            strategy = make_strategy(name, random.Random(0))
            requests = [RouteRequest(rng.choice(MODELS)) for _ in range(5000)]
            started = time.perf_counter()
            for i, req in enumerate(requests):
                strategy.pick(nodes, req, i * 0.01)
            micros = (time.perf_counter() - started) / len(requests) * 1e6
            print(f"| {size} | {name} | {micros:.0f} |")


if __name__ == "__main__":
    main()
