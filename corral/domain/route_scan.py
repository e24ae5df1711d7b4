"""Which nodes a decision weighs (docs/routing.md, "Big fleets").

In a fleet of up to `Costs.scan_nodes` nodes every node is weighed. Beyond that, the per-model index
(fleet_index.py) finds the copies of the model and a few nodes to load on without a pass over the
fleet, and a copy with a free slot ends the search early; when these bounded scans find nothing, the
full filter (`candidates`) decides, as in a small fleet.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from corral.domain.candidates import is_loaded
from corral.domain.evictions import Evictions
from corral.domain.fleet import NodeView, RouteRequest
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

    def _ready(self, node: NodeView, req: RouteRequest, now: float) -> Option | None:
        """The node, if the model is loaded and ready there with a free slot (as far as we know)."""
        busy = node.in_flight_by_model.get(req.model, 0)
        if busy >= max(1, node.parallel) or self._gone.get((node.name, req.model), -1.0) > now:
            return None
        if not is_loaded(node, req):
            return None
        load = self._loads.get(node.name, {}).get((req.model, req.options_key))
        if load is not None and load.ready_at > now:
            return None
        option = self._free_slot(node, req, now)
        return option if option.ready_slot else None

    def _free_slot(self, node: NodeView, req: RouteRequest, now: float) -> Option:
        """A ready runner with a free slot: no wait, unless the prompts ahead of it would take longer
        than a load (then it is weighed as the queue it is). Prefer a GPU fewer other models are busy
        on, then the fewest requests in flight."""
        others = busy_others(node, req.model)
        if self.costs.work_waits and self.ledger.ahead(node.name, req.model):
            prefill = self._work_wait(node, req.model, now) * (1 + others) / speed(node)
            if prefill > self.costs.prefill_queue * self.load_s(node, req.model):
                return Option(node, True, self.costs.queue_weight * prefill)
        cost = 0.1 * others + 0.01 * node.in_flight / speed(node)
        return Option(node, True, cost, ready_slot=True)

    def _quick(self, ready: list[Option], req: RouteRequest) -> bool:
        """A ready copy starts the request sooner than any load could: no need to weigh the rest."""
        best = min(ready, key=lambda o: o.cost)
        return best.cost <= self.costs.replicate_discount * self.load_s(best.node, req.model)
