"""Which nodes a decision weighs (docs/routing.md, "Big fleets").

In a fleet of up to `Costs.scan_nodes` nodes every node is weighed. Beyond that, the per-model index
(fleet_index.py) finds the copies of the model and a few nodes to load on without a pass over the
fleet, and a copy with a free slot ends the search early; when these bounded scans find nothing, the
full filter (`candidates`) decides, as in a small fleet.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from corral.domain.candidates import candidates, candidates_holding
from corral.domain.evictions import Evictions
from corral.domain.fleet import NodeView, NoRoute, RouteRequest
from corral.domain.fleet_index import admissible
from corral.domain.route_costs import Option, busy_others, holds_fast, speed


class Scan(Evictions):
    def _indexed(
        self, nodes: Sequence[NodeView], req: RouteRequest, now: float
    ) -> tuple[list[Option], list[NodeView]] | None:
        """From the per-model index: copies with a free slot (a few suffice), else the `weigh_nodes`
        least busy copies (those we are loading included); None when the full filter must decide."""
        index = self._index
        index.update(nodes)
        if index.refused:
            return None  # a node refused a model for memory: fit.py's rules need the whole group
        k = self.costs.weigh_nodes
        key = (req.model, req.options_key)
        self._cursor += 1
        cursor = self._cursor
        positions = index.holders(key)
        if self._loads:
            loading = [index.positions.get(n, -1) for n, loads in self._loads.items() if key in loads]
            if loading:
                positions = tuple(dict.fromkeys([*positions, *(i for i in loading if i >= 0)]))
        start = cursor % len(positions) if positions else 0
        positions = positions[start:] + positions[:start]
        views = index.views
        model = req.model
        ready: list[Option] = []
        busy: list[tuple[float, int]] = []  # (requests in flight ÷ weight, position) of the copies seen
        tried = 0  # copies with a slot free that were weighed: a bounded number of them
        for i in positions:  # every copy, cheaply: one free slot anywhere is found
            node = views[i]
            count = node.in_flight_by_model.get(model, 0)
            busy.append((count / (node.weight or 1e-9), i))
            if count >= (node.parallel or 1) or tried >= 2 * k or not admissible(node, req):
                continue
            tried += 1
            if (o := self._ready(node, req, now)) is not None:
                ready.append(o)
                if len(ready) >= self.costs.ready_scan:
                    break
        if ready and req.affinity is None and self._quick(ready, req):
            return ready, []
        for i in positions[len(busy) :]:
            busy.append((views[i].in_flight_by_model.get(model, 0) / (views[i].weight or 1e-9), i))
        # The least busy copies: a pass over the copies alone, not the fleet.
        resident: list[NodeView] = []
        for _, i in heapq.nsmallest(4 * k, busy):
            if admissible(node := views[i], req):
                resident.append(node)
                if len(resident) == k:
                    break
        if not ready and not resident and not self._spare(req, set(), probe=True):
            return None
        return ready, resident

    def _spare(self, req: RouteRequest, skip: set[str], probe: bool = False) -> list[NodeView]:
        """Nodes of the index to weigh a load on: up to `weigh_nodes` with room for another runner, then
        others to make up `weigh_nodes`, each from a bounded scan at a rotating start."""
        index = self._index
        k = 1 if probe else self.costs.weigh_nodes
        out: list[NodeView] = []
        taken = set(skip)
        for positions, want in ((index.roomy(), k), (range(len(index)), k)):
            count = len(positions)
            for j in range(min(count, 4 * self.costs.scan_nodes)):
                if len(out) >= want:
                    break
                node = index.views[positions[(self._cursor + j) % count]]
                if node.name not in taken and admissible(node, req):
                    taken.add(node.name)
                    out.append(node)
        return out

    def _shortlist(self, rotated: list[NodeView], req: RouteRequest, now: float) -> tuple[list[Option], list[NodeView]]:
        """In a big fleet, one pass over it: up to `scan_nodes` copies with a free slot, and the nodes
        worth weighing when there is none: the least busy copies of the model (and those we are
        loading), then nodes with room for another runner, then others, `scan_nodes` of each."""
        k = self.costs.scan_nodes
        key = (req.model, req.options_key)
        ready: list[Option] = []
        resident: list[NodeView] = []
        roomy: list[NodeView] = []
        rest: list[NodeView] = []
        for n in rotated:
            if holds_fast(n.loaded, req.model, req.options_key) or key in self._loads.get(n.name, ()):
                if len(ready) < k and (o := self._ready(n, req, now)) is not None:
                    ready.append(o)
                resident.append(n)
            elif len(roomy) < k and len(n.loaded) < n.max_loaded:
                roomy.append(n)
            elif len(rest) < k and len(roomy) < k:
                rest.append(n)
        if len(resident) > k:
            resident = heapq.nsmallest(k, resident, key=lambda n: n.in_flight_by_model.get(req.model, 0) / speed(n))
        return ready, resident + roomy + rest[: k - len(roomy)]

    def _candidates(
        self, nodes: Sequence[NodeView], req: RouteRequest
    ) -> tuple[list[NodeView], list[int] | None] | NoRoute:
        """`candidates`, and in a small fleet's common case the positions among them of the nodes that
        hold the model, from one pass (None: not known)."""
        fused = candidates_holding(nodes, req) if len(nodes) <= self.costs.scan_nodes else None
        if fused is not None:
            return fused
        free = candidates(nodes, req)
        return free if isinstance(free, NoRoute) else (free, None)

    def _ready_holding(self, free: list[NodeView], holding: list[int], req: RouteRequest, now: float) -> list[Option]:
        """`_ready_among(rotate(free, cursor))`, from the positions in `free` of the nodes holding the
        model: the others are never ready."""
        start, count = self._cursor % len(free), len(free)
        if len(holding) > 1:
            holding.sort(key=lambda p: (p - start) % count)
        return [o for p in holding if (o := self._ready_loaded(free[p], req, now)) is not None]

    def _ready_among(self, nodes: list[NodeView], req: RouteRequest, now: float) -> list[Option]:
        """`_ready` of each node, in order, those that are; a small fleet's common case, so the test
        that rules out most nodes (they do not hold the model) is inlined."""
        model, options = req.model, req.options_key
        ready: list[Option] = []
        for n in nodes:
            for m in n.loaded:
                if m.model == model and m.options_key == options:
                    if (o := self._ready(n, req, now)) is not None:
                        ready.append(o)
                    break
        return ready

    def _ready(self, node: NodeView, req: RouteRequest, now: float) -> Option | None:
        """The node, if the model is loaded and ready there with a free slot (as far as we know)."""
        # The cheapest test first: most nodes of a small fleet do not hold the model.
        if not holds_fast(node.loaded, req.model, req.options_key):
            return None
        return self._ready_loaded(node, req, now)

    def _ready_loaded(self, node: NodeView, req: RouteRequest, now: float) -> Option | None:
        """`_ready` of a node known to hold a runner of the model."""
        busy = node.in_flight_by_model.get(req.model, 0)
        if busy >= max(1, node.parallel) or (self._gone and self._gone.get((node.name, req.model), -1.0) > now):
            return None
        loads = self._loads.get(node.name)
        if loads is not None:
            key = (req.model, req.options_key)
            load = loads.get(key)
            if load is not None and self._ready_at(node.name, key, load, now) > now:
                return None
        option = self._free_slot(node, req, now)
        return option if option.ready_slot else None

    def _free_slot(self, node: NodeView, req: RouteRequest, now: float) -> Option:
        """A ready runner with a free slot: no wait, unless the prompts ahead of it would take longer
        than a load (then it is weighed as the queue it is). Prefer a GPU fewer other models are busy
        on, then the fewest requests in flight."""
        if self.costs.homes_busy and (charge := self._homes_taken(node, req, now)) > 0:
            return Option(node, True, charge)  # no free slot: it is a queued big model's GPU time
        others = busy_others(node, req.model)
        if self.costs.work_waits and self.ledger.ahead(node.name, req.model):
            # `_work_wait` with a slot free is the prompts not yet started times the prefill rate (ledger.py),
            # computed here without the rest of its estimate; none left: no wait (the same answer).
            model = req.model
            prompts = self.ledger.unstarted_prompts(node.name, model, node.in_flight_by_model.get(model, 0))
            if prompts:
                tpot = self.ledger.tpot(model, self._prior_tpot(node, model))
                wait = prompts * self.ledger.prefill(model, tpot * self.costs.prefill_share)
                prefill = wait * (1 + others) / speed(node)
                if prefill > self.costs.prefill_queue * self.load_s(node, model):
                    return Option(node, True, self.costs.queue_weight * prefill, wait=prefill)
        cost = 0.1 * others + 0.01 * node.in_flight / speed(node)
        return Option(node, True, cost, ready_slot=True)

    def _quick(self, ready: list[Option], req: RouteRequest) -> bool:
        """A ready copy starts the request sooner than any load could: no need to weigh the rest."""
        best = min(ready, key=lambda o: o.cost)
        return best.cost <= self.costs.replicate_discount * self.load_s(best.node, req.model)
