"""What the residency controller (corral/domain/residency.py) reads: its parameters, each model's
arrival rates (recent and usual), routing's estimated waits on its copies, its demand in slots and the
copies that demand needs, and the fleet's churn (runners coming and going) and calm.

Pure: time is an argument.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corral.domain.fleet import NodeView


class RoutingEstimates(Protocol):
    """What the controller reads from routing's cost model (`ModelAware` has all three)."""

    def wait_s(self, node: NodeView, model: str, now: float) -> float:
        """Seconds a new request for the model would wait on the node's copy."""
        ...

    def load_s(self, node: NodeView, model: str) -> float:
        """Seconds loading the model on the node takes."""
        ...

    def service_s(self, node: NodeView, model: str) -> float:
        """Seconds a request of the model holds a slot."""
        ...


@dataclass(frozen=True, slots=True)
class ResidencyParams:
    hot: float = 1.0  # queued: the wait on its best copy is at least this many of its load times
    cool: float = 0.3  # cool: the best wait below this many load times, requests within its slots ...
    cool_s: float = 60.0  # ... for this long: unpinned
    hold_s: float = 1.0  # queued this long on end before a replica is preloaded (a passing queue is routing's)
    window_s: float = 10.0  # arrival rates are averaged over about this long
    min_rate: float = 0.05  # requests/s below which a model is never hot (one-off requests)
    settle_s: float = 10.0  # after a preload of a model, wait this long before another (it must load)
    keep_alive: str = "5m"  # what an unpinned replica goes back to
    victim_share: float = 0.15  # a runner may be evicted for a replica if its model stays below this elsewhere
    idle_node: float = 0.25  # only nodes with fewer requests in flight than this share of their slots
    fleet_busy: float = 0.3  # no eviction for a replica while the fleet has more than this share busy
    trend_window_s: float = 300.0  # the model's usual rate, averaged over about this long
    rise: float = 5.0  # a replica is preloaded only while the recent rate is this many times the usual one
    trade: float = 0.5  # runners in use may be evicted for a replica if they keep busy this share of the slots it lacks
    churn_window_s: float = 60.0  # runners unloaded in the fleet are counted over this long ...
    churn: float = 1.0  # ... and above this many per node, the fleet is thrashing: no eviction for a replica
    fill: float = 0.75  # copies needed: its demand in slots over this share of a copy's slots
    surge: float = 4.0  # without a rise, a replica only while the demand is this many times its copies' slots ...
    calm: float = 0.15  # ... and the other models keep at most this share of the fleet's slots busy


@dataclass
class ModelState:
    rate: float = 0.0  # decayed arrival count
    usual: float = 0.0  # the same over trend_window_s
    at: float = 0.0
    queued_since: float | None = None
    queued_at: float = -math.inf  # the last decision that found it queued
    cool_since: float | None = None
    preload_at: float = -math.inf
    backoff_s: float = 0.0  # grows while preloads of this model do not stick (churn), resets when one does
    replicas_at_preload: int = 0
    pinned: set[str] = field(default_factory=set)  # nodes where we pinned it


class Signals:
    """Arrivals counted per model, and what the fleet snapshots and routing's estimates say of them."""

    def __init__(self, params: ResidencyParams | None = None) -> None:
        self.p = params or ResidencyParams()
        self._models: dict[str, ModelState] = {}
        self._sizes: dict[str, int] = {}  # model -> resident bytes seen in /api/ps
        self._since: float | None = None  # the first arrival seen: how much history the usual rates have
        self._held: dict[str, frozenset[str]] = {}  # node -> models loaded at the last decision
        self._unloads: deque[float] = deque()  # when runners left nodes still up, over churn_window_s
        self._arrived: deque[float] = deque()  # when runners appeared on nodes, likewise

    def observe(self, model: str, now: float) -> None:
        """A request for `model` arrived."""
        self._since = now if self._since is None else self._since
        m = self._models.setdefault(model, ModelState(at=now))
        m.rate = m.rate * math.exp(-(now - m.at) / self.p.window_s) + 1.0
        m.usual = m.usual * math.exp(-(now - m.at) / self.p.trend_window_s) + 1.0
        m.at = now

    def rate(self, model: str, now: float) -> float:
        m = self._models.get(model)
        if m is None:
            return 0.0
        return m.rate * math.exp(-(now - m.at) / self.p.window_s) / self.p.window_s

    def usual_rate(self, model: str, now: float) -> float:
        m = self._models.get(model)
        if m is None:
            return 0.0
        # Averaged over the history there is: right after start every model would look like it turns hot.
        seen = 1.0 - math.exp(-(now - (now if self._since is None else self._since)) / self.p.trend_window_s)
        return m.usual * math.exp(-(now - m.at) / self.p.trend_window_s) / self.p.trend_window_s / max(seen, 1e-9)

    def rising(self, model: str, now: float) -> bool:
        """Asked for much more than usual: a turn, not the steady traffic routing already places."""
        return self.rate(model, now) >= self.p.rise * self.usual_rate(model, now)

    def share(
        self, model: str, nodes: Sequence[NodeView], est: RoutingEstimates, now: float, usual: bool = False
    ) -> float:
        """Arrival rate (the recent one, or with `usual` the long-run one) over the rate its loaded
        replicas serve with every slot busy."""
        capacity = sum(
            max(1, n.parallel) * max(n.weight, 1e-9) / max(est.service_s(n, model), 1e-3)
            for n in nodes
            if n.eligible and holds_model(n, model)
        )
        rate = self.usual_rate(model, now) if usual else self.rate(model, now)
        return rate / capacity if capacity > 0 else (math.inf if rate > 0 else 0.0)

    def occupancy(self, model: str, nodes: Sequence[NodeView]) -> float:
        """Requests in flight for the model over its loaded replicas' slots (above 1: a queue)."""
        holders = [n for n in nodes if n.eligible and holds_model(n, model)]
        slots = sum(max(1, n.parallel) for n in holders)
        busy = sum(n.in_flight_by_model.get(model, 0) for n in holders)
        return busy / slots if slots else 0.0

    def queue(self, model: str, nodes: Sequence[NodeView], est: RoutingEstimates, now: float) -> float:
        """Routing's estimated wait on the model's best copy, in load times (inf with no copy)."""
        holders = [n for n in nodes if n.eligible and holds_model(n, model)]
        if not holders:
            return math.inf
        wait = min(est.wait_s(n, model, now) for n in holders)
        return wait / max(min(est.load_s(n, model) for n in holders), 1e-3)

    def _watch(self, nodes: Sequence[NodeView], now: float) -> None:
        """Learn sizes, and count the runners that left nodes still up since the last decision (evicted
        or expired): the fleet's churn."""
        for n in nodes:
            for lm in n.loaded:
                if lm.size or lm.size_vram:
                    self._sizes[lm.model] = max(lm.size, lm.size_vram)
            held = frozenset(lm.model for lm in n.loaded)
            before = self._held.get(n.name)
            if before is not None and n.up:
                self._unloads.extend(now for _ in before - held)
            if before is not None:  # runners already there when it started are not coming
                self._arrived.extend(now for _ in held - before)
            self._held[n.name] = held
        for times in (self._unloads, self._arrived):
            while times and now - times[0] > self.p.churn_window_s:
                times.popleft()

    def calm(self, model: str, nodes: Sequence[NodeView]) -> bool:
        """The other models keep at most `calm` of the fleet's slots (one set per node) busy: a replica
        then takes time and room nobody else is using."""
        live = [n for n in nodes if n.eligible]
        others = sum(n.in_flight - n.in_flight_by_model.get(model, 0) for n in live)
        if len(self._arrived) > self.p.churn * max(1, len(nodes)) or self.thrashing(nodes):
            return False  # runners still coming (a start) or going: the fleet is placing them
        return others <= self.p.calm * sum(max(1, n.parallel) for n in live)

    def thrashing(self, nodes: Sequence[NodeView]) -> bool:
        """More runners unloaded over `churn_window_s` than `churn` per node."""
        return len(self._unloads) > self.p.churn * max(1, len(nodes))

    def needed(self, model: str, nodes: Sequence[NodeView], est: RoutingEstimates, now: float) -> int:
        """Copies the model's queue needs: its demand in slots (the requests in flight, or what its recent
        arrivals keep busy, whichever is more: closed-loop clients arrive no faster than they are served,
        so the queue itself is the measure) over `fill` of a copy's slots, and enough copies to share the
        wait on its best copy out below `hot` load times."""
        holders = [n for n in nodes if n.eligible and holds_model(n, model)]
        if not holders:
            return 0
        slots = sum(max(1, n.parallel) for n in holders)
        demand = self.demand(model, holders, est, now)
        by_demand = math.ceil(demand / (self.p.fill * slots / len(holders)) - 1e-9)
        waits = self.queue(model, nodes, est, now)
        by_wait = math.ceil(len(holders) * waits / self.p.hot - 1e-9) if math.isfinite(waits) else 0
        return max(by_demand, by_wait)

    def demand(self, model: str, holders: Sequence[NodeView], est: RoutingEstimates, now: float) -> float:
        """Slots the model keeps busy: its requests in flight, or its recent rate times a request's slot time."""
        busy = sum(n.in_flight_by_model.get(model, 0) for n in holders)
        service = max(est.service_s(n, model) for n in holders) if holders else 0.0
        return max(float(busy), self.rate(model, now) * service)


def holds_model(node: NodeView, model: str) -> bool:
    return any(m.model == model for m in node.loaded)
