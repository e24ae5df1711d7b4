"""Residency control: load a replica of a model that turns hot before requests queue long for it, keep
hot models resident, and let them go when they cool (docs/routing.md, "Residency").

Routing alone adds a replica only when a request finds every loaded copy busy, and that request (and
the ones behind it) pay the load. This controller reads routing's own estimates (`RoutingEstimates`, the cost
model of corral/domain/model_aware.py and its ledger of queued work): a model is **queued** when the
wait a new request would see on its best copy is at least `hot` of its load times, so that a replica
loaded now would serve sooner than its copies. A model queued for `hold_s` on end while asked for well
above its usual rate (a turn: a passing queue or steady traffic is routing's to place) gets one more
replica at a time: into free room (no eviction), else, only while the fleet is neither saturated nor
thrashing and has lost no node, on a node whose runners Ollama would unload are idle, unpinned and
barely used, or keep busy far fewer slots than the hot model lacks.
The replicas it preloads are pinned (`keep_alive` -1: Ollama sorts them last when it picks a victim and
never expires them, server/sched.go `ByDurationAndName`); once the model's best wait stays below `cool`
load times with its requests within its slots for `cool_s`, they are unpinned (the default keep_alive).
Copies routing loaded are left as they are: routing predicts Ollama's victims without knowing of pins,
and pinning them made it mispredict (docs/routing.md, Residency).

Pure: `observe` counts arrivals, `decide` returns actions for the caller to carry out (an empty-prompt
generate with keep_alive); time is an argument.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corral.domain.fleet import LoadedModel, NodeView

PIN = "-1"
MAX_BACKOFF_S = 300.0


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


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "preload" (load and pin), "unpin"
    node: str
    model: str
    keep_alive: str
    reason: str


@dataclass
class _Model:
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


class Residency:
    def __init__(self, params: ResidencyParams | None = None) -> None:
        self.p = params or ResidencyParams()
        self._models: dict[str, _Model] = {}
        self.recent: list[tuple[float, Action]] = []  # the last decisions, for /internal/status
        self._sizes: dict[str, int] = {}  # model -> resident bytes seen in /api/ps
        self._since: float | None = None  # the first arrival seen: how much history the usual rates have
        self._held: dict[str, frozenset[str]] = {}  # node -> models loaded at the last decision
        self._unloads: deque[float] = deque()  # when runners left nodes still up, over churn_window_s
        self._arrived: deque[float] = deque()  # when runners appeared on nodes, likewise

    def observe(self, model: str, now: float) -> None:
        """A request for `model` arrived."""
        self._since = now if self._since is None else self._since
        m = self._models.setdefault(model, _Model(at=now))
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
            if n.eligible and _holds(n, model)
        )
        rate = self.usual_rate(model, now) if usual else self.rate(model, now)
        return rate / capacity if capacity > 0 else (math.inf if rate > 0 else 0.0)

    def occupancy(self, model: str, nodes: Sequence[NodeView]) -> float:
        """Requests in flight for the model over its loaded replicas' slots (above 1: a queue)."""
        holders = [n for n in nodes if n.eligible and _holds(n, model)]
        slots = sum(max(1, n.parallel) for n in holders)
        busy = sum(n.in_flight_by_model.get(model, 0) for n in holders)
        return busy / slots if slots else 0.0

    def queue(self, model: str, nodes: Sequence[NodeView], est: RoutingEstimates, now: float) -> float:
        """Routing's estimated wait on the model's best copy, in load times (inf with no copy)."""
        holders = [n for n in nodes if n.eligible and _holds(n, model)]
        if not holders:
            return math.inf
        wait = min(est.wait_s(n, model, now) for n in holders)
        return wait / max(min(est.load_s(n, model) for n in holders), 1e-3)

    def decide(self, nodes: Sequence[NodeView], est: RoutingEstimates, now: float) -> list[Action]:
        actions: list[Action] = []
        self._watch(nodes, now)
        hot: set[str] = set()
        wanting: list[tuple[str, _Model, list[str], float]] = []
        for model, m in self._models.items():
            holders = [n.name for n in nodes if n.eligible and _holds(n, model)]
            # With no copy there is no queue: the first is routing's to load, for the request that asks
            # (and pins left on copies that are gone cool off like any other).
            waits = self.queue(model, nodes, est, now) if holders else 0.0
            if holders and waits >= self.p.hot and self.rate(model, now) >= self.p.min_rate:
                hot.add(model)
                m.queued_since = now if m.queued_since is None else m.queued_since
                m.queued_at = now
                m.cool_since = None
                if now - m.queued_since >= self.p.hold_s:
                    wanting.append((model, m, holders, waits))
                continue
            if now - m.queued_at > self.p.hold_s:
                m.queued_since = None  # a dip shorter than hold_s (one request just done) does not count
            spare = len(holders) - len(m.pinned & set(holders))  # the copies it did not preload
            if (
                m.pinned
                and waits < self.p.cool
                and self.occupancy(model, nodes) <= 1.0
                and (not holders or self.needed(model, nodes, est, now) <= spare)
            ):
                m.cool_since = now if m.cool_since is None else m.cool_since
            else:
                m.cool_since = None
            if m.pinned and m.cool_since is not None and now - m.cool_since >= self.p.cool_s:
                actions += [self._act("unpin", n, model, self.p.keep_alive, "cooled") for n in sorted(m.pinned)]
                m.pinned.clear()
        # Replicas once every hot model is known and pinned: a preload must not evict one found hot later.
        # At most one per node and decision: the room seen is for one load (two would evict).
        taken: set[str] = set()
        for model, m, holders, waits in wanting:
            preload = self._preload(model, m, nodes, holders, hot, waits, est, now, taken)
            taken.update(a.node for a in preload)
            actions += preload
        for _, m in self._models.items():
            m.pinned &= {n.name for n in nodes}  # a node removed from the fleet
        self._forget(now)
        for action in actions:
            self.recent.append((now, action))
        del self.recent[:-50]
        return actions

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
        holders = [n for n in nodes if n.eligible and _holds(n, model)]
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

    def _preload(
        self,
        model: str,
        m: _Model,
        nodes: Sequence[NodeView],
        holders: list[str],
        hot: set[str],
        waits: float,
        est: RoutingEstimates,
        now: float,
        taken: set[str],
    ) -> list[Action]:
        """As many replicas as the model's queue needs, at once, for a queued model that is asked for well
        above its usual rate (a turn) or whose demand is well beyond its copies' slots (a surge): not the
        passing queues of steady traffic routing already places (and that a replica more would only churn)."""
        if m.backoff_s and now - m.preload_at >= self.p.settle_s and len(holders) > m.replicas_at_preload:
            m.backoff_s = 0.0  # the last replica stuck
        if now - m.preload_at < self.p.settle_s + m.backoff_s:
            return []
        copies = [n for n in nodes if n.name in holders]
        slots = sum(max(1, n.parallel) for n in copies)
        surging = self.demand(model, copies, est, now) >= self.p.surge * slots and self.calm(model, nodes)
        if not (surging or self.rising(model, now)):
            return []
        want = self.needed(model, nodes, est, now) - len(holders)
        actions: list[Action] = []
        chosen = set(taken)
        for _ in range(max(0, want)):
            target = self._room(nodes, model, hot | self._pinned_models(), est, now, chosen)
            if target is None:
                break
            chosen.add(target)
            actions.append(self._act("preload", target, model, PIN, f"queued: {waits:.1f} load times, {want} more"))
        if not actions:
            return []
        if now - m.preload_at < 2 * (self.p.settle_s + m.backoff_s) + self.p.window_s:
            # Queued again soon after the last preload: it did not stick, or did not help.
            m.backoff_s = min(MAX_BACKOFF_S, max(self.p.settle_s, 2 * m.backoff_s))
        m.replicas_at_preload = len(holders)
        m.preload_at = now
        m.pinned.update(a.node for a in actions)
        return actions

    def pinned(self) -> dict[str, list[str]]:
        return {model: sorted(m.pinned) for model, m in sorted(self._models.items()) if m.pinned}

    def _pinned_models(self) -> set[str]:
        return {model for model, m in self._models.items() if m.pinned}

    def _act(self, kind: str, node: str, model: str, keep_alive: str, reason: str) -> Action:
        return Action(kind, node, model, keep_alive, reason)

    def _room(
        self,
        nodes: Sequence[NodeView],
        model: str,
        hot_models: set[str],
        est: RoutingEstimates,
        now: float,
        taken: set[str],
    ) -> str | None:
        """A node to load a replica on: free room first (fewest runners), else one whose predicted victims
        are all idle and cold; never a node that lacks the model or already holds it."""
        best: tuple[int, int, str] | None = None
        live = [n for n in nodes if n.eligible]
        # A fleet busy with other models has no cold model to spare: evicting one only moves a queue (and
        # a load) to it. The hot model's own queue does not count: it is why a replica is wanted. Nor may
        # a fleet that lost a node evict: its capacity is short, and routing already weighs every eviction.
        slots = sum(max(1, n.parallel) * sum(m.model != model for m in n.loaded) for n in live)
        others = sum(n.in_flight - n.in_flight_by_model.get(model, 0) for n in live)
        may_evict = slots > 0 and others <= self.p.fleet_busy * slots
        may_evict = may_evict and len(live) == len(nodes) and not self.thrashing(nodes)
        for n in nodes:
            if not n.eligible or not n.serves(model) or _holds(n, model) or n.name in taken:
                continue
            if n.max_concurrency is not None and n.in_flight >= n.max_concurrency:
                continue
            if n.in_flight > self.p.idle_node * max(1, n.parallel) * max(1, len(n.loaded)):
                continue  # a busy node: a load there slows what it serves (and its loads queue)
            free = len(n.loaded) < n.max_loaded and self._fits(n, model)
            if free:
                rank = (0, len(n.loaded), n.name)
            elif may_evict and self._cold_victim(n, model, nodes, hot_models, est, now):
                rank = (1, n.in_flight, n.name)
            else:
                continue
            best = rank if best is None or rank < best else best
        return None if best is None else best[2]

    def _cold_victim(
        self,
        node: NodeView,
        model: str,
        nodes: Sequence[NodeView],
        hot_models: set[str],
        est: RoutingEstimates,
        now: float,
    ) -> bool:
        """Take a full node only if every runner Ollama would unload for the replica is idle, not hot or
        pinned, and would stay cold without this replica (or gets almost no requests): evicting a model
        in use only moves the queue to it. Ollama unloads until the model fits (server/sched.go
        processPending), each time its first idle runner by (keep_alive, digest): pinned ones sort last."""
        victims = self._victims(node, model, hot_models)
        if not victims:
            return False
        rest = [n for n in nodes if n.name != node.name]
        if any(v.model in hot_models or node.in_flight_by_model.get(v.model, 0) > 0 for v in victims):
            return False
        # What the victims keep busy, on the long-run rate (at high load every model has quiet spells of a
        # few seconds), against the slots the hot model lacks: a model in use is evicted only for a much
        # larger shortfall, since its requests then wait for a load of their own.
        used = sum(self.usual_rate(v.model, now) * est.service_s(node, v.model) for v in victims)
        if used <= self.p.trade * self._shortfall(model, nodes, est, now):
            return True
        for victim in victims:
            if (
                max(self.rate(victim.model, now), self.usual_rate(victim.model, now)) >= self.p.min_rate
                and max(self.share(victim.model, rest, est, now), self.share(victim.model, rest, est, now, True))
                >= self.p.victim_share
            ):
                return False
        return True

    def _shortfall(self, model: str, nodes: Sequence[NodeView], est: RoutingEstimates, now: float) -> float:
        """Slots the model lacks: its requests queued beyond its replicas' slots, or what its recent
        arrivals keep busy beyond them."""
        holders = [n for n in nodes if n.eligible and _holds(n, model)]
        node = holders[0] if holders else next((n for n in nodes if n.serves(model)), None)
        if node is None:
            return 0.0
        slots = sum(max(1, n.parallel) for n in holders)
        # The queue itself, too: the service time is a request's own, and slots that share a GPU serve
        # less than their number, so the rate alone understates what a model lacks.
        queued = sum(n.in_flight_by_model.get(model, 0) for n in holders) - slots
        return max(0.0, queued, self.rate(model, now) * est.service_s(node, model) - slots)

    def _victims(self, node: NodeView, model: str, hot_models: set[str]) -> list[LoadedModel]:
        """What loading `model` evicts: runners in Ollama's order (idle first) until a slot is free and,
        when the node's memory is known, the model fits."""
        order = sorted(node.loaded, key=lambda m: (m.model in hot_models, m.digest or m.model))
        idle = [m for m in order if node.in_flight_by_model.get(m.model, 0) == 0]
        order = idle + [m for m in order if m not in idle]
        out: list[LoadedModel] = []
        while order and (len(order) >= node.max_loaded or not self._fits(node, model, order)):
            out.append(order.pop(0))
        return out

    def _fits(self, node: NodeView, model: str, loaded: Sequence[LoadedModel] | None = None) -> bool:
        """Loading the model evicts nothing by memory (Ollama loads into 80% of free memory), with these
        runners resident (default: the node's)."""
        if node.vram_bytes is None:
            return True

        def size(name: str) -> int:
            return self._sizes.get(name) or int((node.model_sizes.get(name) or 0) * 1.3)

        used = sum(m.size or m.size_vram or size(m.model) for m in (node.loaded if loaded is None else loaded))
        return size(model) <= 0.8 * (node.vram_bytes - used)

    def _forget(self, now: float) -> None:
        stale = [k for k, m in self._models.items() if not m.pinned and now - m.at > 10 * self.p.window_s]
        for key in stale:
            del self._models[key]


def _holds(node: NodeView, model: str) -> bool:
    return any(m.model == model for m in node.loaded)
