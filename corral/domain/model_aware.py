"""Model-aware routing: send a request where its model is already loaded, and load it elsewhere only
when that is cheaper than waiting (docs/routing.md).

Every suitable node gets an estimated time until the request could start there:

- the model is resident with the request's load-time options and a slot is free now: no wait. These
  nodes always win; among them the least contended GPU, then the fewest requests in flight;
- resident, but every slot is taken (or the runner is still loading): what is left of the load, plus
  the requests queued ahead × the model's service time ÷ slots, slower by the other models busy on
  the same GPU (they time-share it);
- not resident: the loads already started on that node (Ollama loads one model at a time), the load
  itself (fixed cost + size ÷ disk bandwidth), and the evictions Ollama will make to fit it. The
  victims are predicted with Ollama's own rule (idle runners first, in digest order; `max_loaded` and,
  when the node's memory is configured, 80% of free memory). Each victim costs its unload, the wait
  for its requests to finish, and, when it was in use within `in_use_s`, its own reload elsewhere:
  that is what stops two models from evicting each other in turn.

A load into free room (no victim, no load ahead) is an investment later requests share, so once no
resident replica has a free slot its cost is discounted: hot models get replicas, cold ones do not.
A runner with other load-time options (`num_ctx`...) counts as another model: it is never "resident"
for the request, and replacing it is an eviction like any other, so option sets end up on their own
nodes instead of reloading each other.

The router's own decisions are authoritative between `/api/ps` polls: a node it just sent a cold
request to holds the model from then on (loading until its estimated ready time or the first token,
whichever comes first), and the victims it expects Ollama to evict count as gone.

Service and load times start from size-based priors and are learnt online from what the gateway sees
(`first_token`, `finished`), so the same constants work for fast and slow fleets alike.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from corral.domain.candidates import candidates, holds, is_loaded, rotate
from corral.domain.fleet import LoadedModel, NodeView, NoRoute, NoRouteReason, Pick, RouteRequest
from corral.domain.fleet_index import FleetIndex, admissible
from corral.domain.homes import Homes, crowds
from corral.domain.ledger import Ledger
from corral.domain.load_queue import LoadQueues
from corral.domain.prefix_index import prefer

Key = tuple[str, str]  # (model, load-time options)


@dataclass(frozen=True, slots=True)
class Costs:
    """The cost model's priors (docs/ollama-behaviour.md §6); the defaults suit GPU nodes on NVMe."""

    load_fixed_s: float = 1.5  # spawn the runner, allocate KV cache and graph, warm up
    load_bytes_per_s: float = 2.5e9  # disk to GPU, page cache cold
    default_size: int = 4_000_000_000  # bytes on disk of a model whose size is unknown
    resident_factor: float = 1.3  # resident bytes ÷ bytes on disk (KV cache, graph), until /api/ps says
    fit_share: float = 0.8  # Ollama loads without evicting only into this share of free memory
    unload_s: float = 1.0  # stopping a victim and waiting for its memory to come back
    service_s: float = 5.0  # a typical request's time in a slot, for a model of `reference_size` bytes
    reference_size: int = 5_000_000_000  # decoding is memory-bound: bigger models hold a slot longer
    replicate_discount: float = 0.3  # a load into free room, once no resident replica has a free slot
    in_use_s: float = 60.0  # a model routed to within this long is in use: evicting it costs a reload
    rate_window_s: float = 60.0  # arrival rates per model are averaged over about this long
    overload: float = 0.6  # a model's replicas are overloaded above this utilisation
    stability_loads: float = 4.0  # charged, in load times, for an eviction that only moves a queue elsewhere
    forget_s: float = 10.0  # how long the router's own residency news outlives its estimates
    affinity_slack_s: float = 1.0  # stay on a session's node unless another is this much sooner
    affinity_max: int = 65_536  # sessions remembered
    learn_rate: float = 0.2  # weight of each new observation in the learnt service and load times
    # In a fleet of more nodes than this, a decision uses the per-model index (fleet_index.py) and
    # bounded scans, so that it costs about the same at 256 nodes as at 16 (docs/benchmarks.md, decision
    # time); where the full filter must decide, it weighs at most this many of each kind.
    scan_nodes: int = 16
    ready_scan: int = 4  # with the index: enough copies with a free slot to choose among
    weigh_nodes: int = 4  # ... and, with none, the copies and the nodes to load on weighed (each)
    # Work, not requests (corral/domain/ledger.py). False: queues counted in requests, as before issue 17
    # (with `saturation` at infinity, the decisions of a fleet of up to `scan_nodes` nodes are then the
    # same as before it, request for request).
    work_waits: bool = True
    # The per-token priors, before anything is learnt.
    tpot_s: float = 0.01  # seconds per output token, one sequence alone, for a model of `reference_size`
    prefill_share: float = 1 / 30  # a prompt token's prefill ÷ an output token's decode
    batching: float = 0.35  # b sequences batched on one runner each decode (1 + batching·(b − 1)) slower
    # A model's copies are queued when the soonest start on any of them is this many of its load times
    # away: then a load that evicts another model is weighed without the stability charge.
    replicate_after: float = math.inf
    queue_weight: float = 1.5  # a queue's estimated wait is its mean; the tail is longer
    ledger_max_age_s: float = 3600.0  # a runner whose newest request is older than this is forgotten
    saturation: float = 1.0  # nodes this full of requests (÷ their slots) are saturated: no eviction helps
    prefill_queue: float = 1.0  # a free slot behind more than this many load times of prompts is no free slot
    homes: bool = True  # keep models that fit smaller nodes off the only home of a big model in use (homes.py)


@dataclass(slots=True)
class _Option:
    node: NodeView
    resident: bool
    cost: float
    ready_slot: bool = False  # resident, loaded, and a slot free now
    replica: bool = False  # not resident, and loading here evicts nothing and waits for no other load
    victims: tuple[LoadedModel, ...] = ()


@dataclass(slots=True)
class _Load:
    started_at: float
    ready_at: float
    clean: bool  # started with no victim and no load ahead: its duration teaches the load rate
    prior_s: float  # the load time the priors predict, before learning
    seen: bool = False  # a first token came back since


class ModelAware:
    def __init__(self, costs: Costs | None = None) -> None:
        self.costs = costs or Costs()
        self._affinity: OrderedDict[str, str] = OrderedDict()
        self._loads: dict[str, dict[Key, _Load]] = {}  # node -> (model, options) -> a load we started
        self._queue = LoadQueues(self.costs.forget_s)  # node -> the loads sent there, in order (load_queue.py)
        self._gone: dict[tuple[str, str], float] = {}  # (node, model) -> evicted by us; trusted until
        self._last: dict[tuple[str, str], float] = {}  # (node, model) -> last request routed there
        self._sizes: dict[tuple[str, str], int] = {}  # (model, options) -> resident bytes seen in /api/ps
        self._service: dict[str, float] = {}  # model -> learnt seconds in a slot
        self._load_scale: dict[str, float] = {}  # node -> learnt actual ÷ predicted load time
        self._arrivals: dict[Key, tuple[float, float]] = {}  # (model, options) -> (decayed count, at)
        self._cursor = 0
        self._pruned_at = float("-inf")
        self.ledger = Ledger(self.costs.batching, self.costs.learn_rate)
        self._index = FleetIndex()
        self._homes = Homes(self.costs.fit_share)
        self._fleet: Sequence[NodeView] = ()

    # deciding

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        # In a big fleet, the per-model index finds the copies and a few others without a pass over
        # every node; when its bounded scans find nothing, the full filter decides (and says why).
        self._fleet = nodes
        found = self._indexed(nodes, req, now) if len(nodes) > self.costs.scan_nodes else None
        spare: list[NodeView] | None = None
        if found is not None:
            big = True
            ready, pool = found
        else:
            free = candidates(nodes, req)
            if isinstance(free, NoRoute):
                return free
            self._cursor += 1
            rotated = rotate(free, self._cursor)
            big = len(rotated) > self.costs.scan_nodes
            if big:
                ready, pool = self._shortlist(rotated, req, now)
                spare = []
            else:
                ready = [o for n in rotated if (o := self._ready(n, req, now))]
                pool = rotated
                spare = []
        if now - self._pruned_at > self.costs.forget_s:
            self._prune(now)
        self._count((req.model, req.options_key), now)
        # The common case, decided cheaply: the model is loaded and ready somewhere with a free slot.
        # (Affinity may prefer a busier resident node, so it always weighs every option.)
        if big and req.prefer is not None and all(o.node.name != req.prefer for o in ready):
            # The prompt cache's node is weighed among the free slots even when the shortlist missed it.
            ready += [
                o for n in nodes if n.name == req.prefer and admissible(n, req) and (o := self._ready(n, req, now))
            ]
        options = [] if req.affinity is not None else ready
        discounted = False
        if not options or not self._quick(options, req):
            if spare is None:
                pool = pool + self._spare(req, {n.name for n in pool})
            scope = pool if big else nodes  # capacities are counted over the nodes weighed
            held = {n.name: self._held(n, now) for n in scope if n.eligible}
            capacity = self._capacity(scope, held)
            options = self._weigh(pool, req, now, held, capacity)
            if not any(o.ready_slot for o in options):
                discounted = True
                for o in options:
                    if o.replica:
                        o.cost *= self.costs.replicate_discount
        best = min(options, key=lambda o: (not o.ready_slot, o.cost))
        if req.affinity is not None:
            best = self._sticky(req.affinity, options, best)
        elif req.prefer is not None:  # explicit affinity wins over the prompt cache's
            best = prefer(options, best, req.prefer, req.prefer_slack_s)
        if req.max_wait_s is not None and not best.ready_slot:
            # The wait itself, without the discount that favours replicas in the comparison.
            wait = best.cost / self.costs.replicate_discount if discounted and best.replica else best.cost
            if wait > req.max_wait_s:
                return NoRoute(NoRouteReason.TOO_SLOW)  # before any bookkeeping: nothing was dispatched
        if not best.resident:
            self._start_load(best, req, now)
        self._dispatched(best, req, now)
        self._last[(best.node.name, req.model)] = now
        return Pick(best.node.name, cold=not best.resident)

    def _sticky(self, session: str, options: list[_Option], best: _Option) -> _Option:
        sticky = self._affinity.get(session)
        for o in options:
            if o.node.name == sticky and o.resident and o.cost <= best.cost + self.costs.affinity_slack_s:
                best = o
        self._affinity[session] = best.node.name
        self._affinity.move_to_end(session)
        if len(self._affinity) > self.costs.affinity_max:
            self._affinity.popitem(last=False)
        return best

    def _indexed(
        self, nodes: Sequence[NodeView], req: RouteRequest, now: float
    ) -> tuple[list[_Option], list[NodeView]] | None:
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
        ready: list[_Option] = []
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

    def _shortlist(
        self, rotated: list[NodeView], req: RouteRequest, now: float
    ) -> tuple[list[_Option], list[NodeView]]:
        """In a big fleet, one pass over it: up to `scan_nodes` copies with a free slot, and the nodes
        worth weighing when there is none: the least busy copies of the model (and those we are
        loading), then nodes with room for another runner, then others, `scan_nodes` of each."""
        k = self.costs.scan_nodes
        key = (req.model, req.options_key)
        ready: list[_Option] = []
        resident: list[NodeView] = []
        roomy: list[NodeView] = []
        rest: list[NodeView] = []
        for n in rotated:
            if _holds_fast(n.loaded, req.model, req.options_key) or key in self._loads.get(n.name, ()):
                if len(ready) < k and (o := self._ready(n, req, now)) is not None:
                    ready.append(o)
                resident.append(n)
            elif len(roomy) < k and len(n.loaded) < n.max_loaded:
                roomy.append(n)
            elif len(rest) < k and len(roomy) < k:
                rest.append(n)
        if len(resident) > k:
            resident = heapq.nsmallest(k, resident, key=lambda n: n.in_flight_by_model.get(req.model, 0) / _speed(n))
        return ready, resident + roomy + rest[: k - len(roomy)]

    def _ready(self, node: NodeView, req: RouteRequest, now: float) -> _Option | None:
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

    def _free_slot(self, node: NodeView, req: RouteRequest, now: float) -> _Option:
        """A ready runner with a free slot: no wait, unless the prompts ahead of it would take longer
        than a load (then it is weighed as the queue it is). Prefer a GPU fewer other models are busy
        on, then the fewest requests in flight."""
        others = _others(node, req.model)
        if self.costs.work_waits and self.ledger.ahead(node.name, req.model):
            prefill = self._work_wait(node, req.model, now) * (1 + others) / _speed(node)
            if prefill > self.costs.prefill_queue * self.load_s(node, req.model):
                return _Option(node, True, self.costs.queue_weight * prefill)
        cost = 0.1 * others + 0.01 * node.in_flight / _speed(node)
        return _Option(node, True, cost, ready_slot=True)

    def _quick(self, ready: list[_Option], req: RouteRequest) -> bool:
        """A ready copy starts the request sooner than any load could: no need to weigh the rest."""
        best = min(ready, key=lambda o: o.cost)
        return best.cost <= self.costs.replicate_discount * self.load_s(best.node, req.model)

    def _weigh(
        self,
        pool: list[NodeView],
        req: RouteRequest,
        now: float,
        held: dict[str, list[LoadedModel]],
        capacity: _Capacity,
    ) -> list[_Option]:
        """Every node of the pool: the copies first, whose soonest start says whether the model is
        queued (then loading it elsewhere may evict), then the others."""
        options: list[_Option] = []
        rest: list[NodeView] = []
        for n in pool:
            if _holds_fast(held[n.name], req.model, req.options_key):
                options.append(self._option(n, req, now, held[n.name], capacity, resident=True))
            else:
                rest.append(n)
        soonest = min((o.cost for o in options), default=math.inf)
        calm: bool | None = None
        homes = self._crowding(req, now) if rest and self.costs.homes else None
        for n in rest:
            load = self.load_s(n, req.model)
            queued = soonest > self.costs.replicate_after * load
            # No load costs less than this (discounted; or, on a full node, a victim's unload and, while
            # the model's copies keep up, the stability charge): one that cannot beat the soonest copy
            # is not weighed at all.
            if len(held[n.name]) < n.max_loaded:
                floor = load * self.costs.replicate_discount
            else:
                if calm is None:
                    calm = self._calm(req, capacity, now)
                floor = load + self.costs.unload_s + (0.0 if queued or not calm else self.costs.stability_loads * load)
            if floor >= soonest:
                continue
            option = self._option(n, req, now, held[n.name], capacity, queued=queued, resident=False)
            if homes is not None and n.vram_bytes is not None:
                option.cost += crowds(homes[0], n.vram_bytes, homes[1])
            options.append(option)
        return options

    def _crowding(self, req: RouteRequest, now: float) -> tuple[int | None, list[tuple[int | None, float]]] | None:
        """The request's model's smallest home, and the models in use with theirs and their reload's
        charge (homes.py); None where a node's memory is unknown."""
        memories = self._index.memories() if len(self._fleet) > self.costs.scan_nodes else _memories(self._fleet)
        if memories is None or len(memories) < 2:
            return None
        node = self._fleet[0]
        own = self._homes.smallest(memories, self._resident_bytes(node, req.model, req.options_key))
        others = []
        for (model, options), (_, at) in self._arrivals.items():
            if now - at < self.costs.in_use_s and model != req.model:
                home = self._homes.smallest(memories, self._resident_bytes(node, model, options))
                if home is not None and own is not None and home > own:
                    others.append((home, self.costs.stability_loads * self.load_s(node, model)))
        return own, others

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

    def _dispatched(self, best: _Option, req: RouteRequest, now: float) -> None:
        prompt = min(req.est_prompt_tokens, req.est_tokens)
        load = self._loads.get(best.node.name, {}).get((req.model, req.options_key))
        ready = best.resident and (load is None or load.ready_at <= now)
        self.ledger.dispatched(best.node.name, req.model, prompt, req.est_tokens - prompt, now, ready)

    def _option(
        self,
        node: NodeView,
        req: RouteRequest,
        now: float,
        held: list[LoadedModel],
        capacity: _Capacity,
        queued: bool = False,
        resident: bool | None = None,
    ) -> _Option:
        slots = max(1, node.parallel)
        busy = node.in_flight_by_model.get(req.model, 0)
        others = _others(node, req.model)
        if resident if resident is not None else holds(held, req):
            load = self._loads.get(node.name, {}).get((req.model, req.options_key))
            left = max(0.0, load.ready_at - now) if load is not None else 0.0
            if left == 0 and busy < slots:
                return self._free_slot(node, req, now)
            if self.costs.work_waits:
                queue = self.costs.queue_weight * self._work_wait(node, req.model, now)
            else:  # requests, not work: each ahead beyond the slots holds one for a typical time
                queue = max(0, busy - slots + 1) * self.service_s(node, req.model) / slots
            return _Option(node, True, left + queue * (1 + others) / _speed(node))
        pipeline = self._queue.free_at(node.name, now) - now
        cost = pipeline + self.load_s(node, req.model) + 0.25 * others
        victims = self._victims(node, held, req)
        if not victims:
            return _Option(node, False, cost, replica=pipeline == 0)
        if not queued and self._calm(req, capacity, now):
            # Its replicas keep up with its traffic: the queue there is a passing burst, and evicting
            # another model for it would only move a queue from one model to the other.
            cost += self.costs.stability_loads * self.load_s(node, req.model)
        for v in victims:
            cost += self._eviction_cost(node, v, now, capacity)
        return _Option(node, False, cost, victims=victims)

    # what a node holds and what loading there displaces

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

    def _resident_bytes(self, node: NodeView, model: str, options: str) -> int:
        seen = self._sizes.get((model, options)) or self._sizes.get((model, ""))
        if seen:
            return seen
        return int((node.model_sizes.get(model) or self.costs.default_size) * self.costs.resident_factor)

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

    def _calm(self, req: RouteRequest, capacity: _Capacity, now: float) -> bool:
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

    def _eviction_cost(self, node: NodeView, victim: LoadedModel, now: float, capacity: _Capacity) -> float:
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

    # demand and capacity

    def _count(self, key: Key, now: float) -> None:
        value, at = self._arrivals.get(key, (0.0, now))
        self._arrivals[key] = (value * math.exp(-(now - at) / self.costs.rate_window_s) + 1.0, now)

    def _utilisation(self, key: Key, capacity: float, now: float) -> float:
        """Requests per second for (model, options) over what its replicas serve per second."""
        value, at = self._arrivals.get(key, (0.0, now))
        rate = value * math.exp(-(now - at) / self.costs.rate_window_s) / self.costs.rate_window_s
        return rate / capacity if capacity > 0 else math.inf

    def _slot_rate(self, node: NodeView, model: str) -> float:
        """Requests per second one runner of `model` on `node` completes with every slot busy."""
        return max(1, node.parallel) * _speed(node) / self.service_s(node, model)

    def _capacity(self, nodes: Sequence[NodeView], held: dict[str, list[LoadedModel]]) -> _Capacity:
        return _Capacity(self, nodes, held)

    # estimates, from priors and what the gateway observed

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

    def _start_load(self, best: _Option, req: RouteRequest, now: float) -> None:
        node = best.node
        idle = self._queue.free_at(node.name, now) <= now
        drain = max((self._drain_s(node, v.model) for v in best.victims), default=0.0)
        predicted = self.load_s(node, req.model)
        key = (req.model, req.options_key)
        ready = self._queue.push(node.name, key, now, drain, self.costs.unload_s * len(best.victims) + predicted)
        for victim in best.victims:
            self._gone[(node.name, victim.model)] = ready + self.costs.forget_s
            started = self._loads.get(node.name, {})
            for k in [k for k in started if k[0] == victim.model]:
                del started[k]
                self._queue.drop(node.name, k)
        self._gone.pop((node.name, req.model), None)
        clean = idle and not best.victims
        prior = self._prior_load_s(node, req.model)
        self._loads.setdefault(node.name, {})[key] = _Load(now, ready, clean, prior)

    # what the gateway observed

    def first_token(self, node: str, model: str, options_key: str, now: float, timed: bool = True) -> None:
        """The first byte of an answer for `model` came from `node`: if we had it loading there, it is
        loaded now, and the first timed answer after a clean load teaches the node's load rate."""
        self.ledger.started(node, model, now, timed)
        self._queue.seen(node, (model, options_key))
        load = self._loads.get(node, {}).get((model, options_key))
        if load is None or load.seen:
            return
        load.seen = True
        if load.clean and timed and load.prior_s > 0:
            ratio = min(20.0, max(0.05, (now - load.started_at) / load.prior_s))
            self._load_scale[node] = self._ewma(self._load_scale.get(node, 1.0), ratio)
        load.ready_at = min(load.ready_at, now)

    def finished(self, node: str, model: str, service_s: float, now: float) -> None:
        """A request held a slot for `service_s` (first token to last)."""
        self.ledger.finished(node, model, service_s)
        if service_s > 0:
            previous = self._service.get(model)
            self._service[model] = service_s if previous is None else self._ewma(previous, service_s)

    def _ewma(self, old: float, new: float) -> float:
        return old + self.costs.learn_rate * (new - old)

    def _prune(self, now: float) -> None:
        c = self.costs
        self._pruned_at = now
        for name in list(self._loads):
            kept = {k: v for k, v in self._loads[name].items() if now < v.ready_at + c.forget_s}
            if kept:
                self._loads[name] = kept
            else:
                del self._loads[name]
        self._queue.prune(now)
        self._gone = {k: t for k, t in self._gone.items() if t > now}
        self._last = {k: t for k, t in self._last.items() if now - t < c.in_use_s}
        self.ledger.prune(now, c.ledger_max_age_s)


class _Capacity(dict[Key, float]):
    """Requests per second each (model, options) is served at by its runners on the nodes weighed,
    summed in one pass when first asked (a decision that finds a free slot never asks)."""

    def __init__(self, owner: ModelAware, nodes: Sequence[NodeView], held: dict[str, list[LoadedModel]]) -> None:
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


def _holds_fast(runners: Sequence[LoadedModel], model: str, options_key: str) -> bool:
    """candidates.holds, as a plain loop (it runs once per node per decision in big fleets)."""
    for m in runners:  # noqa: SIM110 (a generator in any() costs twice as much here)
        if m.model == model and m.options_key == options_key:
            return True
    return False


def _others(node: NodeView, model: str) -> int:
    """Other models with requests in flight on the node: they time-share its GPU."""
    return sum(1 for m, k in node.in_flight_by_model.items() if k > 0 and m != model)


def _memories(nodes: Sequence[NodeView]) -> frozenset[int] | None:
    out = set()
    for n in nodes:
        if n.vram_bytes is None:
            return None
        out.add(n.vram_bytes)
    return frozenset(out)


def _speed(node: NodeView) -> float:
    return node.weight if node.weight > 0 else 1e-9
