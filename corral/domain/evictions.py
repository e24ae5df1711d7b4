"""What loading a model on a node displaces, and what that costs (docs/routing.md).

The victims are predicted with Ollama's own rule (`server/sched.go`, findRunnerToUnload: idle runners
first, in digest order; `max_loaded` and, when the node's memory is configured, 80% of free memory).
Each victim costs its unload, the wait for its requests to finish, and, when it was in use within
`in_use_s`, its own reload elsewhere: that is what stops two models from evicting each other in turn.
With `Costs.victim_queue` set (off by default), the last copy of a model that gets a request or more
per reload time also costs the requests it strands (`_stranded`): the one with less demand goes.
A load of a model that fits smaller nodes onto the only home of a big model in use costs that model's
reload too (homes.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from corral.domain.fleet import LoadedModel, NodeView, RouteRequest
from corral.domain.route_costs import Key, fleet_memories, holds_fast, speed
from corral.domain.route_estimates import UNSET_MEMORIES, Estimates


class Evictions(Estimates):
    def _held(self, node: NodeView, now: float) -> list[LoadedModel]:
        """The node's runners: /api/ps (with the gateway's dispatches), less what we expect evicted."""
        gone, sizes, name = self._gone, self._sizes, node.name
        if gone:
            held = []
            for m in node.loaded:
                if gone.get((name, m.model), -1.0) > now:
                    continue
                if m.size:
                    sizes[(m.model, m.options_key)] = m.size
                held.append(m)
        else:  # nothing evicted by us: every runner, their sizes noted in one call (same order, same result)
            seen = self._seen_sizes.get(name)
            if seen is None or seen[0] is not node:
                pairs = [((m.model, m.options_key), m.size) for m in node.loaded if m.size]
                seen = self._seen_sizes[name] = (node, pairs)
            sizes.update(seen[1])
            held = list(node.loaded)
        loads = self._loads.get(name)
        if not loads:
            return held
        # A load we started that /api/ps does not show yet (Ollama lists a runner only once its load
        # begins, after any victim has drained): it is coming.
        for key, load in loads.items():
            model, options = key
            coming = now < self._ready_at(name, key, load, now) + self.costs.forget_s
            if coming and not holds_fast(held, model, options):
                held = [m for m in held if m.model != model]
                held.append(self._coming(key))
        return held

    def _coming(self, key: Key) -> LoadedModel:
        """The runner a load we started will be, as /api/ps would list it (one per key, kept: building
        one costs more than the rest of `_held`)."""
        runner = self._placeholders.get(key)
        if runner is None:
            if len(self._placeholders) >= 4096:
                self._placeholders.clear()
            runner = self._placeholders[key] = LoadedModel(*key)
        return runner

    def _victims(self, node: NodeView, held: list[LoadedModel], req: RouteRequest) -> tuple[LoadedModel, ...]:
        """The runners Ollama will unload to fit the request's model, in order (docs/ollama-behaviour.md §5):
        the model's own runner with other options first, then idle runners in digest (blob path) order,
        else the first in that order."""
        model = req.model
        out = [m for m in held if m.model == model]
        rest = [m for m in held if m.model != model]
        rest.sort(key=_blob)
        need = -1  # the model's resident bytes, worked out when the memory is checked
        busy = node.in_flight_by_model
        while rest:
            if len(rest) < node.max_loaded:  # the memory is summed only when the count allows it
                if node.vram_bytes is None:
                    break
                if need < 0:
                    need = self._resident_bytes(node, model, req.options_key)
                used = sum(m.size or self._resident_bytes(node, m.model, m.options_key) for m in rest)
                if need <= self.costs.fit_share * (node.vram_bytes - used):
                    break
            victim = rest[0]
            for m in rest:  # the first idle one, else the first
                if busy.get(m.model, 0) == 0:
                    victim = m
                    break
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

    def _moves_a_backlog(self, node: NodeView, victims: Sequence[LoadedModel], capacity: Capacity) -> bool:
        """For `Costs.saturated_keeps_queues` (the caller checks the flag): with the nodes weighed
        saturated, this load would evict a runner that has requests queued beyond its slots. It would
        hand one backlog's node to another backlog, and add a load to both: no queue gets shorter for it.
        Such a load is weighed only when the request has nothing else (model_aware.py, `_weigh`)."""
        if not victims or not capacity.saturated:
            return False
        slots = max(1, node.parallel)
        return any(node.in_flight_by_model.get(v.model, 0) > slots for v in victims)

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
        reload = self.load_s(node, victim.model)
        cost += reload
        if left <= 0:
            cost += self.costs.stability_loads * reload + self._stranded(key, reload, now)
        elif self._utilisation(key, left, now) >= self.costs.keep_overload:
            cost += self.costs.stability_loads * reload
        return cost

    def _stranded(self, key: Key, reload: float, now: float) -> float:
        """The waits an eviction of a model's last copy leaves behind, when the model gets a request or
        more per reload time (its last minute's rate): those that arrive while it reloads each wait
        about that reload. A model that rarely comes back within its reload strands nobody."""
        expected = self._rate(key, now) * reload  # its requests during one reload
        return self.costs.victim_queue * expected * reload if expected >= 1 else 0.0

    def _capacity(self, nodes: Sequence[NodeView], held: dict[str, list[LoadedModel]]) -> Capacity:
        return Capacity(self, nodes, held)

    def _memories(self) -> frozenset[int] | None:
        """The fleet's configured node memories; None where some node's is unknown."""
        if len(self._fleet) > self.costs.scan_nodes:
            return self._index.memories()
        if self._fleet_memories is UNSET_MEMORIES:  # once per decision (`pick` resets it)
            self._fleet_memories = fleet_memories(self._fleet)
        return self._fleet_memories

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

    def _homes_used(self, node: NodeView, own: int | None, now: float) -> bool:
        """A big model that needs a node this size (more than `own`, the request's model's) is busy on
        this node, or was sent here within `in_use_s`: its room here is not spare (homes.py)."""
        if own is None or node.vram_bytes is None:
            return False
        for (model, _), (_, home, _) in self._big.items():
            if own < home <= node.vram_bytes and (
                node.in_flight_by_model.get(model, 0) > 0
                or now - self._last.get((node.name, model), -math.inf) < self.costs.in_use_s
            ):
                return True
        return False

    def _homes_taken(self, node: NodeView, req: RouteRequest, now: float) -> float:
        """`_homes_queued` where `Costs.homes_busy` is on and a big model is in use; else 0."""
        if not self.costs.homes_busy or not self._big:
            return 0.0
        return self._homes_queued(node, req, now)

    def _homes_queued(self, node: NodeView, req: RouteRequest, now: float) -> float:
        """`Costs.homes_busy`: serving the request on a node big enough for a big model that needs a
        node this size (more than the request's model does), while that model's requests queue, takes
        GPU time the big model's queue has nowhere else to get (runners time-share a GPU; the small
        model has smaller homes). The charge is the request's service time for each request queued
        ahead of the big model's next one: those beyond its slots on this node, or, from its last
        decision (within `forget_s`), its wait on its copies in units of its service time. 0 when the
        big models are not queued (homes.py)."""
        memories = self._memories()
        if node.vram_bytes is None or memories is None or len(memories) < 2:
            return 0.0
        own = self._homes.smallest(memories, self._resident_bytes(node, req.model, req.options_key))
        if own is None or own >= node.vram_bytes:
            return 0.0
        slots = max(1, node.parallel)
        queued = 0.0
        for key, (_, home, _) in self._big.items():
            if own < home <= node.vram_bytes:
                service = self.service_s(node, key[0])
                wait = (node.in_flight_by_model.get(key[0], 0) - slots) * service / slots
                at, seen = self._big_wait.get(key, (-math.inf, 0.0))
                if now - at < self.costs.forget_s:
                    wait = max(wait, seen)
                if wait > self.load_s(node, key[0]):  # shorter: a load elsewhere would relieve it
                    queued = max(queued, wait / service)
        return self.service_s(node, req.model) * queued if queued > 0 else 0.0


def _blob(m: LoadedModel) -> str:
    """Ollama's order among runners to evict: by blob path, i.e. digest (the name when unknown)."""
    return m.digest or m.model


class Capacity(dict[Key, float]):
    """Requests per second each (model, options) is served at by its runners on the nodes weighed,
    summed when first asked (a decision that finds a free slot never asks)."""

    def __init__(self, owner: Evictions, nodes: Sequence[NodeView], held: dict[str, list[LoadedModel]]) -> None:
        super().__init__()
        self._owner, self._nodes, self._held = owner, nodes, held
        self._saturated: bool | None = None
        self._asked = 0  # keys summed alone so far

    @property
    def saturated(self) -> bool:
        """The nodes' requests in flight fill `Costs.saturation` of their loaded runners' slots."""
        if self._saturated is None:
            slots = busy = 0
            held = self._held
            for n in self._nodes:  # plain loops: this runs on every decision that weighs loads
                slots += max(1, n.parallel) * len(held.get(n.name, ()))
                if n.up and n.admits and not n.draining:  # NodeView.eligible, without the call
                    busy += n.in_flight
            self._saturated = slots > 0 and busy >= self._owner.costs.saturation * slots
        return self._saturated

    def __missing__(self, key: Key) -> float:
        # Its own model's first, alone (most decisions ask no other); from the third key, all at once.
        # Each key's sum is the same either way: its runners', in the nodes' order.
        service_s = self._owner.service_s
        self._asked += 1
        if self._asked > 2:
            self._asked = -(2**62)  # summed: every runner's key is present from now on
            totals: dict[Key, float] = {}
            for node in self._nodes:
                per = max(1, node.parallel) * speed(node)  # _slot_rate: slots × speed ÷ service time
                for m in self._held.get(node.name, ()):
                    runner = (m.model, m.options_key)
                    totals[runner] = totals.get(runner, 0.0) + per / service_s(node, m.model)
            for runner, rate in totals.items():
                if runner not in self:
                    self[runner] = rate
            return self.setdefault(key, 0.0)
        model, options = key
        total = 0.0
        for node in self._nodes:
            for m in self._held.get(node.name, ()):
                if m.model == model and m.options_key == options:
                    total = total + max(1, node.parallel) * speed(node) / service_s(node, m.model)
        self[key] = total
        return total
