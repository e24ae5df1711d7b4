"""Model-aware routing: send a request where its model is already loaded, and load it elsewhere only
when that is cheaper than waiting (docs/routing.md). This module decides; what it weighs lives in
route_costs.py (the priors), route_estimates.py (what is learnt), route_scan.py (which nodes are
weighed), evictions.py (victims and their cost), load_queue.py (each node's pending loads) and
homes.py (the nodes a big model needs).

Every suitable node gets an estimated time until the request could start there:

- the model is resident with the request's load-time options and a slot is free now: no wait. These
  nodes always win; among them the least contended GPU, then the fewest requests in flight;
- resident, but every slot is taken (or the runner is still loading): what is left of the load, plus
  the work queued ahead on the runner (ledger.py), slower by the other models busy on the same GPU
  (they time-share it);
- not resident: the node's queue of pending loads (Ollama loads one model at a time, first in, first
  out), the load itself (fixed cost + size ÷ disk bandwidth), and the evictions Ollama will make to
  fit it, each victim with its drain, its unload and, when it is in use, its reload elsewhere; a load
  onto the only home of a big model in use costs that model's reload.

A load into free room (no victim, no load ahead) is an investment later requests share, so once no
resident replica has a free slot its cost is discounted: hot models get replicas, cold ones do not
(the homes charge on a node a big model is using is not: that room is the big model's).
While every copy of a model is still loading, its next requests wait for that load (up to its slots)
rather than evict another model elsewhere. A runner with other load-time options (`num_ctx`...)
counts as another model: it is never "resident" for the request, and replacing it is an eviction like
any other, so option sets end up on their own nodes instead of reloading each other.

The router's own decisions are authoritative between `/api/ps` polls: a node it just sent a cold
request to holds the model from then on (loading until its estimated ready time or the first token,
whichever comes first), and the victims it expects Ollama to evict count as gone.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from corral.domain.candidates import holds, rotate
from corral.domain.evictions import Capacity
from corral.domain.fleet import LoadedModel, NodeView, NoRoute, NoRouteReason, Pick, RouteRequest
from corral.domain.fleet_index import admissible, may_serve
from corral.domain.homes import crowds
from corral.domain.prefix_index import prefer
from corral.domain.route_costs import Costs, Option, busy_others, holds_fast, speed
from corral.domain.route_estimates import UNSET_MEMORIES, StartedLoad
from corral.domain.route_scan import Scan

__all__ = ["Costs", "ModelAware"]


class ModelAware(Scan):
    def __init__(self, costs: Costs | None = None) -> None:
        super().__init__(costs)
        self._affinity: OrderedDict[str, str] = OrderedDict()
        self._pruned_at = float("-inf")

    # deciding

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        # In a big fleet, the per-model index finds the copies and a few others without a pass over
        # every node; when its bounded scans find nothing, the full filter decides (and says why).
        self._fleet = nodes
        self._fleet_memories = UNSET_MEMORIES
        found = self._indexed(nodes, req, now) if len(nodes) > self.costs.scan_nodes else None
        spare: list[NodeView] | None = None
        lazy: list[NodeView] | None = None  # the candidates, when the pool is to be built from them
        if found is not None:
            big = True
            ready, pool = found
        else:
            found_free = self._candidates(nodes, req)
            if isinstance(found_free, NoRoute):
                return found_free
            free, holding = found_free
            self._cursor += 1
            big = len(free) > self.costs.scan_nodes
            spare = []
            if big:
                ready, pool = self._shortlist(rotate(free, self._cursor), req, now)
            elif holding is None:
                pool = rotate(free, self._cursor)
                ready = self._ready_among(pool, req, now)
            else:
                ready = self._ready_holding(free, holding, req, now)
                pool, lazy = [], free  # the pool is built only if a free slot does not decide
        if now - self._pruned_at > self.costs.forget_s:
            self._prune(now)
        self._count((req.model, req.options_key), now)
        if self.costs.homes:
            self._mark_big(req, now)
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
            if lazy is not None:
                pool = rotate(lazy, self._cursor)
            if spare is None:
                pool = pool + self._spare(req, {n.name for n in pool})
            scope = pool if big else nodes  # capacities are counted over the nodes weighed
            held = {n.name: self._held(n, now) for n in scope if n.eligible}
            alone = self._alone(pool, req, held, now)
            if alone is not None:
                options = [alone]
            else:
                capacity = self._capacity(scope, held)
                options = self._weigh(pool, req, now, held, capacity)
                if not any(o.ready_slot for o in options):
                    discounted = True
                    for o in options:
                        if o.replica:
                            o.cost = (o.cost - o.kept) * self.costs.replicate_discount + o.kept
        best = min(options, key=lambda o: (not o.ready_slot, o.cost))
        if req.affinity is not None:
            best = self._sticky(req.affinity, options, best)
        elif req.prefer is not None:  # explicit affinity wins over the prompt cache's
            best = prefer(options, best, req.prefer, req.prefer_slack_s)
        if not best.ready_slot and (req.max_wait_s is not None or req.shed_after_s is not None):
            timely = self._in_time(nodes, options, best, req, now, discounted)
            if isinstance(timely, NoRoute):
                return timely  # before any bookkeeping: nothing was dispatched
            if timely is not best and req.affinity is not None:
                self._affinity[req.affinity] = timely.node.name  # where the session went after all
            best = timely
        if self.costs.homes_busy and self._big and (key := (req.model, req.options_key)) in self._big:
            self._big_wait[key] = (now, best.cost if best.resident and not best.ready_slot else 0.0)
        if not best.resident:
            self._start_load(best, req, now)
        self._dispatched(best, req, now)
        self._last[(best.node.name, req.model)] = now
        return Pick(best.node.name, cold=not best.resident)

    def _in_time(
        self,
        nodes: Sequence[NodeView],
        options: list[Option],
        best: Option,
        req: RouteRequest,
        now: float,
        discounted: bool,
    ) -> Option | NoRoute:
        """`best`, or why not, under the request's bounds on its wait for a node:

        - `max_wait_s` (a fallback's `fallback_after_s`): `best`'s cost as a wait (the replica discount
          undone) over it gives TOO_SLOW, and the next model of the chain is tried;
        - `shed_after_s` (queue.shed_after_s): `best`'s estimated wait (`_wait`) over it, the cheapest
          option that starts within it is taken instead (a load into free room, another copy's queue;
          a load that evicts a model only for the model's first copy); none does: SHED. A load's own
          time (unloading its victims, the load itself) does not count against this bound for a load
          into free room, nor for the model's first copy (no node it may use holds it or loads it), only
          what it waits for: the loads queued ahead, the drain of the models it evicts. Else a model
          whose load takes longer than the bound could never get a copy, nor a second one. Later
          requests weigh what is left of that load like any queue."""
        if req.max_wait_s is not None:
            cost = best.cost
            if discounted and best.replica:
                cost = (best.cost - best.kept) / self.costs.replicate_discount + best.kept
            if cost > req.max_wait_s:
                return NoRoute(NoRouteReason.TOO_SLOW, cost)
        bound = req.shed_after_s
        if bound is None:
            return best
        first: bool | None = None  # no node the request may use holds or loads the model (asked once)

        def first_copy() -> bool:
            nonlocal first
            if first is None:
                first = not self._has_copy(nodes, req, now)
            return first

        def counted(option: Option, wait: float) -> float:
            if option.resident or (option.victims and not first_copy()):
                return wait
            return wait - self.costs.unload_s * len(option.victims) - self.load_s(option.node, req.model)

        wait = self._wait(best, req, now)
        if counted(best, wait) <= bound:
            return best
        soonest = wait
        timely: list[Option] = []
        for o in options:
            if o is best or (o.victims and not first_copy()):
                continue  # evicting a model to avoid a 503 costs its requests more than the bound saves
            w = self._wait(o, req, now)
            soonest = min(soonest, w)
            if counted(o, w) <= bound:
                timely.append(o)
        if timely:
            return min(timely, key=lambda o: (not o.ready_slot, o.cost))
        return NoRoute(NoRouteReason.SHED, soonest)

    def _has_copy(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> bool:
        """Whether a node the request may use (up, not draining, not excluded, in its groups) holds the
        model with the request's options or is loading it (or, `held_elsewhere`, a node outside the
        views does). In a big fleet, from the per-model index `_indexed` has just updated, not a pass
        over every node."""
        if req.held_elsewhere:
            return True
        key = (req.model, req.options_key)
        if len(nodes) > self.costs.scan_nodes and not self._index.refused:
            views, positions = self._index.views, self._index.positions
            if any(may_serve(views[i], req) for i in self._index.holders(key)):
                return True
            for name, loads in self._loads.items():
                i = positions.get(name)
                if key in loads and i is not None and may_serve(views[i], req) and self._loading(name, req, now):
                    return True
            return False
        return any(
            may_serve(n, req) and (holds_fast(n.loaded, req.model, req.options_key) or self._loading(n.name, req, now))
            for n in nodes
        )

    def _wait(self, option: Option, req: RouteRequest, now: float) -> float:
        """How long until `option` could start the request, as far as the router knows: a copy's queue
        (its mean, without the weight the comparison gives a queue's tail), or a load's: the loads
        queued on the node and its victims' drain, their unloading and the load itself, without the
        charges that weigh what the load costs others (when `_start_load` would book it ready)."""
        if option.resident:
            return option.cost if option.wait is None else option.wait
        return self._load_done_at(option, req, now) - now

    def _load_done_at(self, option: Option, req: RouteRequest, now: float) -> float:
        """When a load for `option` would be done: after the loads queued on its node, and its victims'
        drain (load_queue.py's rule, as `push` books it), unloading them and the load."""
        drain, tail = self._load_parts(option, req)
        return max(self._queue.free_at(option.node.name, now), now + drain) + tail

    def _load_parts(self, option: Option, req: RouteRequest) -> tuple[float, float]:
        """A load's (drain, tail): its victims' drain, then unloading them and the load itself."""
        node = option.node
        drain = max((self._drain_s(node, v.model) for v in option.victims), default=0.0)
        return drain, self.costs.unload_s * len(option.victims) + self.load_s(node, req.model)

    def _sticky(self, session: str, options: list[Option], best: Option) -> Option:
        sticky = self._affinity.get(session)
        for o in options:
            if o.node.name == sticky and o.resident and o.cost <= best.cost + self.costs.affinity_slack_s:
                best = o
        self._affinity[session] = best.node.name
        self._affinity.move_to_end(session)
        if len(self._affinity) > self.costs.affinity_max:
            self._affinity.popitem(last=False)
        return best

    def _alone(
        self, pool: list[NodeView], req: RouteRequest, held: dict[str, list[LoadedModel]], now: float
    ) -> Option | None:
        """`_weigh`'s answer when the pool is one node holding the model and nothing will read the
        option's cost (no `max_wait_s` nor `shed_after_s`): that node, resident, is the pick whatever
        its wait (a fleet of one node under load, where every request queues on its runner). The
        estimate of the wait is skipped; its one effect on state, the ledger's `sync` with the node's
        count, is kept."""
        if len(pool) != 1 or req.max_wait_s is not None or req.shed_after_s is not None:
            return None
        node = pool[0]
        if not holds_fast(held[node.name], req.model, req.options_key):
            return None
        if self.costs.work_waits:  # as `_option` → `_free_slot` or `_work_wait` would
            busy = node.in_flight_by_model.get(req.model, 0)
            key = (req.model, req.options_key)
            started = self._loads.get(node.name, {}).get(key)
            ready = started is None or self._ready_at(node.name, key, started, now) <= now
            free = busy < max(1, node.parallel) and ready
            if not free or self.ledger.ahead(node.name, req.model):
                self.ledger.sync(node.name, req.model, busy)
        return Option(node, True, 0.0)

    def _weigh(
        self,
        pool: list[NodeView],
        req: RouteRequest,
        now: float,
        held: dict[str, list[LoadedModel]],
        capacity: Capacity,
    ) -> list[Option]:
        """Every node of the pool: the copies first, whose soonest start says whether the model is
        queued (then loading it elsewhere may evict), then the others."""
        options: list[Option] = []
        rest: list[NodeView] = []
        for n in pool:
            if holds_fast(held[n.name], req.model, req.options_key):
                options.append(self._option(n, req, now, held[n.name], capacity, resident=True))
            else:
                rest.append(n)
        soonest = min((o.cost for o in options), default=math.inf)
        held_back: list[Option] = []
        # Batch a cold model's requests: while every copy is still loading and one still has a slot for
        # the request, it waits for that load (which starts them together), and no other node evicts a
        # model for one more copy. Beyond the slots, the queue is weighed against a load as usual.
        loading = self.costs.batch_cold and bool(options) and all(self._loading(o.node.name, req, now) for o in options)
        if loading:
            loading = any(o.node.in_flight_by_model.get(req.model, 0) < max(1, o.node.parallel) for o in options)
        calm: bool | None = None
        homes = self._crowding(req, now) if rest and self.costs.homes else None
        # Under queue.shed_after_s, a copy whose queue may be over the bound: loads into free room are
        # weighed even when they cost more than it (`_in_time` may take one rather than shed).
        spill = req.shed_after_s is not None and soonest > req.shed_after_s
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
            if floor >= soonest and not (spill and len(held[n.name]) < n.max_loaded):
                continue
            option = self._option(
                n, req, now, held[n.name], capacity, queued=queued, resident=False, calm=calm, load=load
            )
            if loading and option.victims:
                continue
            if homes is not None and n.vram_bytes is not None:
                charge = crowds(homes[0], n.vram_bytes, homes[1])
                full = charge > 0 and self.costs.homes_full and self._homes_used(n, homes[0], now)
                if (taken := self._homes_taken(n, req, now)) > charge:
                    charge, full = taken, True  # a queue's GPU time is not spared by the discount
                option.cost += charge
                if full:
                    option.kept = charge
            if self.costs.saturated_keeps_queues and self._moves_a_backlog(n, option.victims, capacity):
                held_back.append(option)  # weighed only if nothing else is left
                continue
            options.append(option)
        return options or held_back

    def _loading(self, node: str, req: RouteRequest, now: float) -> bool:
        key = (req.model, req.options_key)
        load = self._loads.get(node, {}).get(key)
        return load is not None and self._ready_at(node, key, load, now) > now

    def _dispatched(self, best: Option, req: RouteRequest, now: float) -> None:
        key = (req.model, req.options_key)
        load = self._loads.get(best.node.name, {}).get(key)
        ready = best.resident and (load is None or self._ready_at(best.node.name, key, load, now) <= now)
        self.ledger.dispatched(best.node.name, req.model, req.est_tokens - req.est_output, req.est_output, now, ready)

    def _option(
        self,
        node: NodeView,
        req: RouteRequest,
        now: float,
        held: list[LoadedModel],
        capacity: Capacity,
        queued: bool = False,
        resident: bool | None = None,
        calm: bool | None = None,  # `_calm` for the request, when the caller has it already
        load: float | None = None,  # `load_s` of the model on the node, likewise
    ) -> Option:
        others = busy_others(node, req.model)
        if resident if resident is not None else holds(held, req):
            slots = max(1, node.parallel)
            busy = node.in_flight_by_model.get(req.model, 0)
            key = (req.model, req.options_key)
            started = self._loads.get(node.name, {}).get(key)
            left = max(0.0, self._ready_at(node.name, key, started, now) - now) if started is not None else 0.0
            if left == 0 and busy < slots:
                return self._free_slot(node, req, now)
            if self.costs.work_waits:
                mean = self._work_wait(node, req.model, now)
                queue = self.costs.queue_weight * mean
            else:  # requests, not work: each ahead beyond the slots holds one for a typical time
                mean = queue = max(0, busy - slots + 1) * self.service_s(node, req.model) / slots
            charge = self._homes_taken(node, req, now) if self.costs.homes_busy else 0.0
            rate = speed(node)
            cost = left + queue * (1 + others) / rate + charge
            return Option(node, True, cost, wait=left + mean * (1 + others) / rate)
        pipeline = self._queue.free_at(node.name, now) - now
        if load is None:
            load = self.load_s(node, req.model)
        cost = pipeline + load + 0.25 * others
        victims = self._victims(node, held, req)
        if not victims:
            return Option(node, False, cost, replica=pipeline == 0)
        if not queued and (calm if calm is not None else self._calm(req, capacity, now)):
            # Its replicas keep up with its traffic: the queue there is a passing burst, and evicting
            # another model for it would only move a queue from one model to the other.
            cost += self.costs.stability_loads * load
        for v in victims:
            cost += self._eviction_cost(node, v, now, capacity)
        return Option(node, False, cost, victims=victims)

    def _start_load(self, best: Option, req: RouteRequest, now: float) -> None:
        node = best.node
        idle = self._queue.free_at(node.name, now) <= now
        drain, tail = self._load_parts(best, req)
        key = (req.model, req.options_key)
        ready = self._queue.push(node.name, key, now, drain, tail)
        for victim in best.victims:
            self._gone[(node.name, victim.model)] = ready + self.costs.forget_s
            started = self._loads.get(node.name, {})
            for k in [k for k in started if k[0] == victim.model]:
                del started[k]
        self._gone.pop((node.name, req.model), None)
        clean = idle and not best.victims
        prior = self._prior_load_s(node, req.model)
        self._loads.setdefault(node.name, {})[key] = StartedLoad(now, ready, clean, prior)

    # what the gateway observed

    def first_token(
        self, node: str, model: str, options_key: str, now: float, timed: bool = True, sent_at: float | None = None
    ) -> None:
        """The first byte of an answer for `model` came from `node`: if we had it loading there, it is
        loaded now, and the first timed answer after a clean load teaches the node's load rate. A request
        sent before a load was started (`sent_at`, when known) was answered by the runner that load
        replaces, which says nothing of that load."""
        self.ledger.started(node, model, now, timed)
        after = math.inf if sent_at is None else sent_at
        self._queue.seen(node, (model, options_key), after)
        load = self._loads.get(node, {}).get((model, options_key))
        if load is None or load.seen or load.started_at > after:
            return
        load.seen = True
        if load.clean and timed and load.prior_s > 0:
            ratio = min(20.0, max(0.05, (now - load.started_at) / load.prior_s))
            self._load_scale[node] = self._ewma(self._load_scale.get(node, 1.0), ratio)
        load.ready_at = min(load.ready_at, now)

    def finished(
        self, node: str, model: str, service_s: float, now: float, output: int | None = None, started: bool = True
    ) -> None:
        """A request held a slot for `service_s` (first token to last); with `output`, one to forget."""
        self.ledger.finished(node, model, service_s, output, started)
        if service_s > 0 and output is None:
            previous = self._service.get(model)
            self._service[model] = service_s if previous is None else self._ewma(previous, service_s)

    def load_failed(self, node: str, model: str, options_key: str, sent_at: float) -> None:
        """The load a failed request would have started is not coming: it leaves the node's queue of
        pending loads (else it would hold the loader for `patience` times its estimate, and every load
        behind it, and a copy that is not coming would count as loading)."""
        key = (model, options_key)
        self._queue.failed(node, key, sent_at)
        load = self._loads.get(node, {}).get(key)
        if load is not None and not load.seen and load.started_at <= sent_at:
            del self._loads[node][key]

    # for the simulated gateway-side hold of cold models (bench/policy_sim/cold_hold.py, an experiment)

    def loader_free_at(self, node: str, now: float) -> float:
        """When the node's loader could start another load, as far as the router knows (load_queue.py)."""
        return self._queue.free_at(node, now)

    # for the residency controller (corral/domain/residency.py)

    def wait_s(self, node: NodeView, model: str, now: float) -> float:
        """Routing's estimate of the seconds a new request for `model` (default options) would wait on
        the node's copy before its prefill starts: what is left of a load, then the work queued ahead
        (the ledger's), slower by the other models busy on the same GPU. 0 with a slot free and no
        prompts ahead; only meaningful where the node holds the model."""
        load = self._loads.get(node.name, {}).get((model, ""))
        left = max(0.0, self._ready_at(node.name, (model, ""), load, now) - now) if load is not None else 0.0
        if self.costs.work_waits:
            queue = self._work_wait(node, model, now)
        else:
            slots = max(1, node.parallel)
            queue = max(0, node.in_flight_by_model.get(model, 0) - slots + 1) * self.service_s(node, model) / slots
        return left + queue * (1 + busy_others(node, model)) / speed(node)

    def _prune(self, now: float) -> None:
        c = self.costs
        self._pruned_at = now
        for name in list(self._loads):
            kept = {k: v for k, v in self._loads[name].items() if now < self._ready_at(name, k, v, now) + c.forget_s}
            if kept:
                self._loads[name] = kept
            else:
                del self._loads[name]
        self._queue.prune(now)
        self._gone = {k: t for k, t in self._gone.items() if t > now}
        self._last = {k: t for k, t in self._last.items() if now - t < c.in_use_s}
        self._big = {k: v for k, v in self._big.items() if now - v[0] < c.in_use_s}
        if self._big_wait:
            self._big_wait = {k: v for k, v in self._big_wait.items() if now - v[0] < c.forget_s}
        if len(self._seen_sizes) > 2 * len(self._fleet) + 64:  # nodes removed from the fleet since
            self._seen_sizes.clear()
        self.ledger.prune(now, c.ledger_max_age_s)
