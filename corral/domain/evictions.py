"""What loading a model on a node displaces, and what that costs (docs/routing.md).

The victims are predicted with Ollama's own rule (`server/sched.go`, findRunnerToUnload: idle runners
first, in digest order; `max_loaded` and, when the node's memory is configured, 80% of free memory).
Each victim costs its unload, the wait for its requests to finish, and, when it was in use within
`in_use_s`, its own reload elsewhere: that is what stops two models from evicting each other in turn.
A load of a model that fits smaller nodes onto the only home of a big model in use costs that model's
reload too (homes.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.domain.fleet import LoadedModel, NodeView, RouteRequest
from corral.domain.route_costs import Key, fleet_memories
from corral.domain.route_estimates import Estimates


class Evictions(Estimates):
    def _held(self, node: NodeView, now: float) -> list[LoadedModel]:
        """The node's runners: /api/ps (with the gateway's dispatches), less what we expect evicted."""
        held = []
        for m in node.loaded:
            if self._gone.get((node.name, m.model), -1.0) > now:
                continue
            if m.size:
                self._sizes[(m.model, m.options_key)] = m.size
            held.append(m)
        # A load we started that /api/ps does not show yet (Ollama lists a runner only once its load
        # begins, after any victim has drained): it is coming.
        for (model, options), load in self._loads.get(node.name, {}).items():
            fresh = now < load.ready_at + self.costs.forget_s
            if fresh and not any(m.model == model and m.options_key == options for m in held):
                held = [m for m in held if m.model != model]
                held.append(LoadedModel(model, options))
        return held

    def _victims(self, node: NodeView, held: list[LoadedModel], req: RouteRequest) -> tuple[LoadedModel, ...]:
        """The runners Ollama will unload to fit the request's model, in order (docs/ollama-behaviour.md §5):
        the model's own runner with other options first, then idle runners in digest (blob path) order,
        else the first in that order."""
        out = [m for m in held if m.model == req.model]
        rest = sorted((m for m in held if m.model != req.model), key=lambda m: m.digest or m.model)
        need = self._resident_bytes(node, req.model, req.options_key)
        while rest:
            used = sum(m.size or self._resident_bytes(node, m.model, m.options_key) for m in rest)
            fits = node.vram_bytes is None or need <= self.costs.fit_share * (node.vram_bytes - used)
            if len(rest) < node.max_loaded and fits:
                break
            idle = [m for m in rest if node.in_flight_by_model.get(m.model, 0) == 0]
            victim = (idle or rest)[0]
            out.append(victim)
            rest.remove(victim)
        return tuple(out)

    def _calm(self, req: RouteRequest, capacity: Capacity, now: float) -> bool:
        """The model's copies keep up with its traffic (a one-minute average), or the nodes weighed are
        saturated: every option is bad then, and an eviction only moves a queue (it stays put)."""
        key = (req.model, req.options_key)
        if capacity.saturated:
            return True
        return capacity[key] > 0 and self._utilisation(key, capacity[key], now) < self.costs.overload

    def _drain_s(self, node: NodeView, model: str) -> float:
        """Until a runner's requests in flight have all finished (Ollama waits for them)."""
        busy = node.in_flight_by_model.get(model, 0)
        if busy == 0:
            return 0.0
        slots = max(1, node.parallel)
        # The longest of the requests in its slots (about S·H(k)), after the ones queued behind them.
        longest = sum(1 / k for k in range(1, min(busy, slots) + 1))
        return self.service_s(node, model) * (max(0, busy - slots) / slots + longest)

    def _eviction_cost(self, node: NodeView, victim: LoadedModel, now: float, capacity: Capacity) -> float:
        cost = self.costs.unload_s + self._drain_s(node, victim.model)
        if now - self._last.get((node.name, victim.model), float("-inf")) >= self.costs.in_use_s:
            return cost
        # In use: its traffic moves to its other replicas, or waits for a reload somewhere.
        key = (victim.model, victim.options_key)
        left = capacity[key] - self._slot_rate(node, victim.model)
        cost += self.load_s(node, victim.model)
        if left <= 0 or self._utilisation(key, left, now) >= self.costs.overload:
            cost += self.costs.stability_loads * self.load_s(node, victim.model)
        return cost

    def _capacity(self, nodes: Sequence[NodeView], held: dict[str, list[LoadedModel]]) -> Capacity:
        return Capacity(self, nodes, held)

    def _memories(self) -> frozenset[int] | None:
        """The fleet's configured node memories; None where some node's is unknown."""
        return self._index.memories() if len(self._fleet) > self.costs.scan_nodes else fleet_memories(self._fleet)

    def _mark_big(self, req: RouteRequest, now: float) -> None:
        """Note a request for a model too big for the fleet's smallest nodes: it is in use (homes.py)."""
        memories = self._memories()
        if memories is None or len(memories) < 2 or not self._fleet:
            return
        node = self._fleet[0]
        home = self._homes.smallest(memories, self._resident_bytes(node, req.model, req.options_key))
        if home is not None and home > min(memories):
            reload = self.costs.stability_loads * self.load_s(node, req.model)
            self._big[(req.model, req.options_key)] = (now, home, reload)

    def _crowding(self, req: RouteRequest, now: float) -> tuple[int | None, list[tuple[int | None, float]]] | None:
        """The request's model's smallest home, and the big models in use with theirs and their reload's
        charge (homes.py); None where a node's memory is unknown or all are alike."""
        memories = self._memories()
        if memories is None or len(memories) < 2:
            return None
        own = self._homes.smallest(memories, self._resident_bytes(self._fleet[0], req.model, req.options_key))
        others: list[tuple[int | None, float]] = []
        for (model, _), (at, home, reload) in self._big.items():
            if now - at < self.costs.in_use_s and model != req.model and own is not None and home > own:
                others.append((home, reload))
        return own, others


class Capacity(dict[Key, float]):
    """Requests per second each (model, options) is served at by its runners on the nodes weighed,
    summed in one pass when first asked (a decision that finds a free slot never asks)."""

    def __init__(self, owner: Evictions, nodes: Sequence[NodeView], held: dict[str, list[LoadedModel]]) -> None:
        super().__init__()
        self._owner, self._nodes, self._held = owner, nodes, held
        self._saturated: bool | None = None
        self._summed = False

    @property
    def saturated(self) -> bool:
        """The nodes' requests in flight fill `Costs.saturation` of their loaded runners' slots."""
        if self._saturated is None:
            slots = sum(max(1, n.parallel) * len(self._held.get(n.name, ())) for n in self._nodes)
            busy = sum(n.in_flight for n in self._nodes if n.eligible)
            self._saturated = slots > 0 and busy >= self._owner.costs.saturation * slots
        return self._saturated

    def __missing__(self, key: Key) -> float:
        if not self._summed:
            self._summed = True
            for node in self._nodes:
                for m in self._held.get(node.name, ()):
                    runner = (m.model, m.options_key)
                    self[runner] = self.get(runner, 0.0) + self._owner._slot_rate(node, m.model)
        return self.setdefault(key, 0.0)
