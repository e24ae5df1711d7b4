"""What model-aware routing knows and learns: the router's state, and its time estimates.

Service and load times start from size-based priors (`Costs`) and are learnt online from what the
gateway sees (`first_token`, `finished` in model_aware.py), so the same constants work for fast and slow
fleets alike. Arrival rates per (model, options) are decayed counts over `Costs.rate_window_s`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corral.domain.fleet import LoadedModel, NodeView
from corral.domain.fleet_index import FleetIndex
from corral.domain.homes import Homes
from corral.domain.ledger import Ledger
from corral.domain.load_queue import LoadQueues
from corral.domain.route_costs import Costs, Key, speed

UNSET_MEMORIES: frozenset[int] = frozenset({-1})  # the fleet's memories, not worked out yet for this decision


@dataclass(slots=True)
class StartedLoad:
    started_at: float
    ready_at: float
    clean: bool  # started with no victim and no load ahead: its duration teaches the load rate
    prior_s: float  # the load time the priors predict, before learning
    seen: bool = False  # a first token came back since


class Estimates:
    """The strategy's state (shared by the scan, the eviction choice and the decision) and its estimates."""

    def __init__(self, costs: Costs | None = None) -> None:
        self.costs = costs or Costs()
        self._loads: dict[str, dict[Key, StartedLoad]] = {}  # node -> (model, options) -> a load we started
        # node -> the loads sent there, in order (load_queue.py)
        self._queue = LoadQueues(self.costs.forget_s, until_answered=self.costs.queue_until_answered)
        self._gone: dict[tuple[str, str], float] = {}  # (node, model) -> evicted by us; trusted until
        self._last: dict[tuple[str, str], float] = {}  # (node, model) -> last request routed there
        self._sizes: dict[tuple[str, str], int] = {}  # (model, options) -> resident bytes seen in /api/ps
        self._service: dict[str, float] = {}  # model -> learnt seconds in a slot
        self._load_scale: dict[str, float] = {}  # node -> learnt actual ÷ predicted load time
        self._arrivals: dict[Key, tuple[float, float]] = {}  # (model, options) -> (decayed count, at)
        self._cursor = 0
        self.ledger = Ledger(self.costs.batching, self.costs.learn_rate)
        self._index = FleetIndex()
        self._homes = Homes(self.costs.fit_share)
        self._fleet: Sequence[NodeView] = ()
        self._fleet_memories: frozenset[int] | None = UNSET_MEMORIES  # this decision's, once asked
        # (model, options) too big for the smallest nodes -> (last request, smallest home, reload charge)
        self._big: dict[Key, tuple[float, int, float]] = {}
        # ... -> (its last decision, the wait on its copies it found then: 0 when a slot or a load was free)
        self._big_wait: dict[Key, tuple[float, float]] = {}
        self._placeholders: dict[Key, LoadedModel] = {}  # the runner each load we started will be
        # node -> (the view last seen, its runners' ((model, options), size)): built once per view
        self._seen_sizes: dict[str, tuple[NodeView, list[tuple[Key, int]]]] = {}

    # time estimates

    def _ready_at(self, node: str, key: Key, load: StartedLoad, now: float) -> float:
        """When a load we started on the node should be ready: the estimate made when it was sent, or,
        with `Costs.queue_until_answered`, later while it is still queued unanswered behind loads that
        took longer than theirs (load_queue.py). Past its estimate with no first token, a copy is not a
        free slot: Ollama has its requests in the pending queue, behind the loads ahead."""
        if not self.costs.queue_until_answered or load.seen:
            return load.ready_at
        queued = self._queue.ready_at(node, key, now)
        return load.ready_at if queued is None or queued < load.ready_at else queued

    def load_s(self, node: NodeView, model: str) -> float:
        return self._prior_load_s(node, model) * self._load_scale.get(node.name, 1.0)

    def _prior_load_s(self, node: NodeView, model: str) -> float:
        size = node.model_sizes.get(model) or self.costs.default_size
        return self.costs.load_fixed_s + size / self.costs.load_bytes_per_s

    def service_s(self, node: NodeView, model: str) -> float:
        learnt = self._service.get(model)
        if learnt is not None:
            return learnt
        size = node.model_sizes.get(model) or self.costs.reference_size
        return self.costs.service_s * (0.4 + 0.6 * size / self.costs.reference_size)

    def _work_wait(self, node: NodeView, model: str, now: float) -> float:
        """The ledger's wait on the node's runner of `model`, on a GPU to itself."""
        busy = node.in_flight_by_model.get(model, 0)
        self.ledger.sync(node.name, model, busy)
        tpot = self.ledger.tpot(model, self._prior_tpot(node, model))
        prefill = self.ledger.prefill(model, tpot * self.costs.prefill_share)
        unknown = (busy - self.ledger.ahead(node.name, model), self.service_s(node, model))
        return self.ledger.wait(node.name, model, node.parallel, tpot, prefill, now, unknown)

    def _prior_tpot(self, node: NodeView, model: str) -> float:
        size = node.model_sizes.get(model) or self.costs.reference_size
        return self.costs.tpot_s * (0.4 + 0.6 * size / self.costs.reference_size)

    def _resident_bytes(self, node: NodeView, model: str, options: str) -> int:
        seen = self._sizes.get((model, options)) or self._sizes.get((model, ""))
        if seen:
            return seen
        return int((node.model_sizes.get(model) or self.costs.default_size) * self.costs.resident_factor)

    # demand and capacity

    def _count(self, key: Key, now: float) -> None:
        value, at = self._arrivals.get(key, (0.0, now))
        self._arrivals[key] = (value * math.exp(-(now - at) / self.costs.rate_window_s) + 1.0, now)

    def _rate(self, key: Key, now: float) -> float:
        """Requests per second for (model, options), averaged over about `rate_window_s`."""
        value, at = self._arrivals.get(key, (0.0, now))
        return value * math.exp(-(now - at) / self.costs.rate_window_s) / self.costs.rate_window_s

    def _utilisation(self, key: Key, capacity: float, now: float) -> float:
        """Requests per second for (model, options) over what its replicas serve per second."""
        rate = self._rate(key, now)
        return rate / capacity if capacity > 0 else math.inf

    def _slot_rate(self, node: NodeView, model: str) -> float:
        """Requests per second one runner of `model` on `node` completes with every slot busy."""
        return max(1, node.parallel) * speed(node) / self.service_s(node, model)

    def _ewma(self, old: float, new: float) -> float:
        return old + self.costs.learn_rate * (new - old)
