"""Routing strategies: a function from a fleet snapshot and a request to a node (or a reason why not).

Every strategy picks only nodes that may serve the model, are up, admit through their breaker, are not
draining, are not excluded and are below their concurrency cap. Strategies may keep small state (a
round-robin cursor, affinity) but never read a clock: `now` is an argument.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from corral.domain.fleet import NodeView, NoRoute, NoRouteReason, Pick, RouteRequest

LOAD_COST_S = 4.0  # a cold load of a typical model (fleet-model.md §2.3)
EVICT_COST_S = 2.0  # unloading a victim first, and the chance it is busy
SERVICE_S = 5.0  # a typical request's time in a slot, for queue-wait estimates


class Strategy(Protocol):
    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute: ...


def candidates(nodes: Sequence[NodeView], req: RouteRequest) -> list[NodeView] | NoRoute:
    serving = [n for n in nodes if n.serves(req.model)]
    if not serving:
        return NoRoute(NoRouteReason.NO_SUCH_MODEL)
    eligible = [n for n in serving if n.eligible and n.name not in req.exclude]
    if not eligible:
        return NoRoute(NoRouteReason.NO_HEALTHY_NODE)
    free = [n for n in eligible if n.max_concurrency is None or n.in_flight < n.max_concurrency]
    if not free:
        return NoRoute(NoRouteReason.ALL_FULL)
    return free


def is_loaded(node: NodeView, req: RouteRequest) -> bool:
    return any(m.model == req.model and m.options_key == req.options_key for m in node.loaded)


class RoundRobin:
    def __init__(self) -> None:
        self._cursor = 0

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        self._cursor += 1
        node = free[self._cursor % len(free)]
        return Pick(node.name, cold=not is_loaded(node, req))


class LeastConnections:
    def __init__(self) -> None:
        self._cursor = 0

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        self._cursor += 1
        start = self._cursor % len(free)
        rotated = free[start:] + free[:start]
        node = min(rotated, key=lambda n: n.in_flight / n.weight)
        return Pick(node.name, cold=not is_loaded(node, req))


class Priority:
    """Highest priority first; within one priority, least connections; lower ones only as fallback."""

    def __init__(self) -> None:
        self._inner = LeastConnections()

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        top = max(n.priority for n in free)
        return self._inner.pick([n for n in free if n.priority == top], req, now)


class PowerOfTwo:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        pair = self._rng.sample(free, 2) if len(free) > 1 else free
        node = min(pair, key=lambda n: n.in_flight / n.weight)
        return Pick(node.name, cold=not is_loaded(node, req))


class ModelAware:
    """Prefer a node where the model is loaded with a free slot; else the cheapest estimated start:
    waiting for a slot where it is loaded, or loading it where that costs least (nothing to evict,
    fewest queued). The gateway's own in-flight counts are applied, so stale polls do not herd."""

    def __init__(self) -> None:
        self._affinity: dict[str, str] = {}
        self._cursor = 0

    def cost(self, node: NodeView, req: RouteRequest) -> float:
        busy = node.in_flight_by_model.get(req.model, 0)
        slots = max(1, node.parallel)
        if is_loaded(node, req):
            waiting = max(0, busy - slots + 1)
            return SERVICE_S * waiting / slots + 0.001 * node.in_flight / node.weight
        others = {m.model for m in node.loaded if m.model != req.model}
        reload = any(m.model == req.model for m in node.loaded)
        evict = len(others) >= node.max_loaded or reload
        # Loading competes with whatever else the node is doing.
        return LOAD_COST_S + (EVICT_COST_S if evict else 0.0) + 0.5 * node.in_flight / node.weight

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        if req.affinity is not None:
            sticky = self._affinity.get(req.affinity)
            for node in free:
                if node.name == sticky and is_loaded(node, req):
                    return Pick(node.name)
        self._cursor += 1
        start = self._cursor % len(free)
        rotated = free[start:] + free[:start]
        node = min(rotated, key=lambda n: self.cost(n, req))
        if req.affinity is not None:
            if len(self._affinity) > 100_000:
                self._affinity.clear()
            self._affinity[req.affinity] = node.name
        return Pick(node.name, cold=not is_loaded(node, req))


def make_strategy(name: str, rng: random.Random | None = None) -> Strategy:
    strategies: dict[str, Strategy] = {
        "round-robin": RoundRobin(),
        "least-connections": LeastConnections(),
        "priority": Priority(),
        "power-of-two": PowerOfTwo(rng),
        "model-aware": ModelAware(),
    }
    try:
        return strategies[name]
    except KeyError:
        raise ValueError(f"unknown routing strategy {name!r}; one of {', '.join(strategies)}") from None
