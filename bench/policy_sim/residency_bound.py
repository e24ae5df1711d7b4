"""How far residency control alone can take the hot-burst scenario: a controller that is *told* the
burst's model and start (no controller can know them) preloads N pinned replicas of it at that very
second, on the least busy nodes that lack it, and otherwise acts as `model-aware+residency`.

    python -m bench.policy_sim.residency_bound --seeds 5 --replicas 2

Prints the p99 TTFT over the seeds (the figure docs/benchmarks.md §2 compares with the real controller).
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Callable, Sequence

from bench.policy_sim import run
from corral.domain.fleet import NodeView
from corral.domain.residency import PIN, Action, Residency, ResidencyParams, RoutingEstimates
from corral.domain.residency_signals import ModelState


class ToldResidency(Residency):
    """The real controller, plus N pinned replicas of `model` at `start` (virtual seconds)."""

    def __init__(self, model: str, start: float, replicas: int) -> None:
        super().__init__(ResidencyParams())
        self.model, self.start, self.replicas = model, start, replicas

    def decide(self, nodes: Sequence[NodeView], est: RoutingEstimates, now: float) -> list[Action]:
        actions = super().decide(nodes, est, now)
        if self.start <= now < self.start + run.RESIDENCY_INTERVAL_S:
            held = [n for n in nodes if any(m.model == self.model for m in n.loaded)]
            others = sorted((n for n in nodes if n.eligible and n not in held), key=lambda n: n.in_flight)
            state = self._models.setdefault(self.model, ModelState(at=now))
            for n in others[: max(0, self.replicas - len(held))]:
                actions.append(Action("preload", n.name, self.model, PIN, "told"))
                state.pinned.add(n.name)
            state.preload_at = now
        return actions


def _always(controller: Residency) -> Callable[[], Residency]:
    return lambda: controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    ttft: list[float] = []
    for seed in range(args.seeds):
        scenario = run.SCENARIOS["hot-burst-50"]()
        assert scenario.burst is not None
        start, end = (share * scenario.duration_s for share in scenario.burst)
        # The same arrivals simulate() draws: the burst's model is the one asked for most in its window.
        arrivals = run.workload(scenario, random.Random(seed * 7919 + 1))
        model = Counter(r.model for r in arrivals if start <= r.arrival < end).most_common(1)[0][0]
        told = ToldResidency(model, start, args.replicas)
        run.Residency = _always(told)  # type: ignore[attr-defined,assignment]  # what simulate() builds
        ttft += run.simulate(scenario, run.RESIDENCY, seed).ttft
    ordered = sorted(ttft)
    print(f"{args.replicas} replicas told at the burst's start, {args.seeds} seeds: "
          f"p99 TTFT {ordered[int(0.99 * len(ordered))]:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
