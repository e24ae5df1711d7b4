"""The simulator's own speed: CPU seconds to simulate one big fleet (docs/benchmarks.md, "Simulator speed").

`python -m bench.policy_sim.speed [--nodes 64] [--models 30] [--duration 1800]` builds a fixed fleet
(24/48/80 GB nodes, 1/2/4 slots, 1B-32B models, Zipf 0.9 reshuffled every 200 s, 60% load) with only
what the simulator has had since the generator's first version, so the same file runs in an older
checkout too: that is how before and after are compared."""

from __future__ import annotations

import argparse
import random
import time

from bench.policy_sim.fleet import NodeParams
from bench.policy_sim.generate import model
from bench.policy_sim.run import Scenario, simulate


def fleet(nodes: int, models: int, duration_s: float) -> Scenario:
    rng = random.Random(7)
    memories = [rng.choice((24, 48, 80)) for _ in range(nodes)]
    params = tuple(NodeParams(vram_gb=0.92 * m, parallel=rng.choice((1, 2, 4))) for m in memories)
    specs = tuple(model(rng.choice((1, 3, 7, 8, 14, 27, 32)), i) for i in range(models))
    return Scenario(
        "speed",
        0.6,
        models=specs,
        nodes=nodes,
        params=params[0],
        node_params=params,
        duration_s=duration_s,
        zipf=0.9,
        shift_every_s=200,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--duration", type=float, default=1800.0, help="virtual seconds of arrivals")
    args = parser.parse_args()
    print("| policy | requests | CPU s |\n|---|---|---|")
    for policy in ("least-connections", "model-aware"):
        started = time.process_time()
        result = simulate(fleet(args.nodes, args.models, args.duration), policy, 7)
        print(f"| {policy} | {result.requests} | {time.process_time() - started:.1f} |", flush=True)


if __name__ == "__main__":
    main()
