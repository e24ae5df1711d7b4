"""How long one routing decision takes: `python -m bench.decision_time [--decisions N] [--sizes 1,3,16,64,256]`.

Random fleets of 1 to 256 nodes, twelve 7B models loaded three per node (a hundred more on disk),
four slots per model, one core, no I/O (the strategies are pure). Four cases:

- free slot: 0-3 requests in flight per loaded copy, so some copy has a free slot (the common case);
- no free slot: every slot of every copy taken, so model-aware weighs the queue on each copy, loads
  elsewhere and their victims (the path that cost 1.9 ms at 256 nodes);
- cold: the model is loaded nowhere, so every decision weighs loads;
- long prompts: as "free slot", but every copy's requests in flight are 16k-token prompts still being
  prefilled (model-aware's ledger knows them), so no free slot is free and every option is weighed;
- mixed memory: nodes of 12, 24, 48 or 80 GB, so that loads also weigh which nodes are the only home of
  a model in use (corral/domain/homes.py), without a free slot and cold;
- shedding: as "no free slot" and "cold", with `queue.shed_after_s` 1 s, so that the best pick's wait
  is over the bound and every option's wait is weighed before the request is shed (or, cold, sent as
  a model's first copy).

Every case but "cold" asks for a model loaded somewhere in the fleet (in a fleet of 1 or 3 nodes most
of the twelve are not, and asking for those would measure cold decisions instead).

The last column is the gateway's side: `Fleet.snapshot` after one node's request began or ended (what
the gateway does before every decision), with real `Node` objects.

Times are the thread's CPU time (`time.thread_time`), so that other processes on a shared machine do
not inflate them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable

from corral.app.fleet import Fleet, Node
from corral.config import BackendSettings, HealthSettings
from corral.domain.breaker import CircuitBreaker
from corral.domain.fleet import LoadedModel, NodeView, RouteRequest
from corral.domain.model_aware import ModelAware
from corral.domain.routing import Strategy, make_strategy

LOADED = [f"m{i}:7b" for i in range(12)]
ON_DISK = LOADED + [f"cold{i}:7b" for i in range(100)]
SIZES = dict.fromkeys(ON_DISK, 4_700_000_000)
SLOTS = 4


def fleet(size: int, full: bool, rng: random.Random, mixed: bool = False) -> list[NodeView]:
    nodes = []
    for i in range(size):
        memory = rng.choice((12, 24, 48, 80)) if mixed else 24
        loaded = rng.sample(LOADED, 3)
        busy = {m: SLOTS if full else rng.randint(0, SLOTS - 1) for m in loaded}
        nodes.append(
            NodeView(
                f"n{i}",
                available=frozenset(ON_DISK),
                model_sizes=SIZES,
                parallel=SLOTS,
                vram_bytes=memory * 2**30,
                loaded=tuple(LoadedModel(m, size=6_000_000_000, digest=m) for m in loaded),
                in_flight=sum(busy.values()),
                in_flight_by_model={m: k for m, k in busy.items() if k},
            )
        )
    return nodes


def long_prompts(strategy: Strategy, nodes: list[NodeView]) -> None:
    """Tell model-aware's ledger that every request in flight is a 16k-token prompt not yet prefilled."""
    if isinstance(strategy, ModelAware):
        for node in nodes:
            for model, count in node.in_flight_by_model.items():
                for _ in range(count):
                    strategy.ledger.dispatched(node.name, model, 16_000, 200, 0.0, ready=True)


def measure(
    name: str,
    size: int,
    full: bool,
    model: Callable[[random.Random, list[str]], str],
    decisions: int,
    prepare: Callable[[Strategy, list[NodeView]], None] = lambda strategy, nodes: None,
    mixed: bool = False,
    shed_after_s: float | None = None,
) -> float:
    """µs per decision."""
    rng = random.Random(size)
    nodes = fleet(size, full, rng, mixed)
    held = [m for m in LOADED if any(r.model == m for n in nodes for r in n.loaded)]
    strategy: Strategy = make_strategy(name, random.Random(0))
    total = 0.0
    for i in range(decisions):
        if i % 100 == 0:  # a fresh strategy now and then: its own loads must not change the case measured
            strategy = make_strategy(name, random.Random(i))
            prepare(strategy, nodes)
        req = RouteRequest(model(rng, held), est_tokens=rng.randint(50, 2000), shed_after_s=shed_after_s)
        started = time.thread_time()
        strategy.pick(nodes, req, i * 0.01)
        total += time.thread_time() - started
    return total / decisions * 1e6


def snapshot_us(size: int, decisions: int) -> float:
    """µs per `Fleet.snapshot` when one node's request began or ended since the last one."""

    async def run() -> float:
        fleet_ = Fleet()
        health = HealthSettings()
        nodes: list[Node] = []
        for i in range(size):
            node = fleet_.add(
                BackendSettings(name=f"n{i}", url=f"http://127.0.0.1:{20000 + i}"), health, CircuitBreaker()
            )
            node.set_tags({m: {"name": m, "size": SIZES[m]} for m in ON_DISK})
            node.loaded = tuple(LoadedModel(m, size=6_000_000_000) for m in LOADED[:3])
            nodes.append(node)
        fleet_.snapshot(0.0)
        rng = random.Random(size)
        total = 0.0
        for i in range(decisions):
            node = nodes[rng.randrange(size)]
            if node.in_flight and i % 2:
                node.end(LOADED[0])
            else:
                node.begin(LOADED[0])
            fleet_.capacity_changed(node)
            started = time.thread_time()
            fleet_.snapshot(i * 0.01)
            total += time.thread_time() - started
        return total / decisions * 1e6

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--sizes", default="1,3,16,64,256")
    args = parser.parse_args()

    def loaded(rng: random.Random, held: list[str]) -> str:
        return rng.choice(held)  # all twelve from 64 nodes up: the same draws as before

    def cold(rng: random.Random, held: list[str]) -> str:
        return f"cold{rng.randrange(100)}:7b"

    def nothing(strategy: Strategy, nodes: list[NodeView]) -> None:
        pass

    Prepare = Callable[[Strategy, list[NodeView]], None]
    Case = tuple[str, bool, Callable[[random.Random, list[str]], str], Prepare, bool, float | None]
    cases: list[Case] = [
        ("free slot", False, loaded, nothing, False, None),
        ("no free slot", True, loaded, nothing, False, None),
        ("cold", False, cold, nothing, False, None),
        ("long prompts", False, loaded, long_prompts, False, None),
        ("mixed memory, no free slot", True, loaded, nothing, True, None),
        ("mixed memory, cold", False, cold, nothing, True, None),
        ("shedding, no free slot", True, loaded, nothing, False, 1.0),
        ("shedding, cold", False, cold, nothing, False, 1.0),
    ]
    print("| nodes | case | least-connections µs | model-aware µs | snapshot µs |")
    print("|---|---|---|---|---|")
    for size in map(int, args.sizes.split(",")):
        snap = snapshot_us(size, args.decisions)
        for label, full, model, prepare, mixed, shed in cases:
            lc = measure("least-connections", size, full, model, args.decisions, mixed=mixed)
            ma = measure("model-aware", size, full, model, args.decisions, prepare, mixed, shed)
            print(f"| {size} | {label} | {lc:.0f} | {ma:.0f} | {snap:.1f} |", flush=True)


if __name__ == "__main__":
    main()
