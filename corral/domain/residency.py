"""Residency control: load a replica of a model that turns hot before requests queue long for it, keep
hot models resident, and let them go when they cool (docs/routing.md, "Residency").

Routing alone adds a replica only when a request finds every loaded copy busy, and that request (and
the ones behind it) pay the load. This controller reads routing's own estimates (`RoutingEstimates`, the cost
model of corral/domain/model_aware.py and its ledger of queued work): a model is **queued** when the
wait a new request would see on its best copy is at least `hot` of its load times, so that a replica
loaded now would serve sooner than its copies. A model queued for `hold_s` on end, while asked for well
above its usual rate (a turn, or one it already acted on) or, on a calm fleet, keeping `surge` times its
copies' slots busy (closed-loop clients queue instead of arriving faster), gets **as many replicas as
its queue needs, at once** (`needed`: its demand in slots over `fill` of a copy's slots, or the copies
that share its wait out below `hot` load times; a passing queue or steady traffic is routing's to
place): into free room
first (no eviction), then, only while the fleet is neither saturated nor thrashing and has lost no
node, on nodes whose runners Ollama would unload are idle, unpinned and barely used, or keep busy far
fewer slots than the hot model lacks.
The replicas it preloads are pinned (`keep_alive` -1: Ollama sorts them last when it picks a victim and
never expires them, server/sched.go `ByDurationAndName`); once the model's best wait stays below `cool`
load times with its requests within its slots, and the copies routing made serve its demand alone, for
`cool_s`, they are unpinned (the default keep_alive).
Copies routing loaded are left as they are: routing predicts Ollama's victims without knowing of pins,
and pinning them made it mispredict (docs/routing.md, Residency).

Pure: `observe` counts arrivals, `decide` returns actions for the caller to carry out (an empty-prompt
generate with keep_alive); time is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.domain.fleet import LoadedModel, NodeView
from corral.domain.residency_signals import ModelState, ResidencyParams, RoutingEstimates, Signals, holds_model

__all__ = ["PIN", "Action", "Residency", "ResidencyParams", "RoutingEstimates"]

PIN = "-1"
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "preload" (load and pin), "unpin"
    node: str
    model: str
    keep_alive: str
    reason: str


class Residency(Signals):
    def __init__(self, params: ResidencyParams | None = None) -> None:
        super().__init__(params)
        self.recent: list[tuple[float, Action]] = []  # the last decisions, for /internal/status

    def decide(self, nodes: Sequence[NodeView], est: RoutingEstimates, now: float) -> list[Action]:
        actions: list[Action] = []
        self._watch(nodes, now)
        hot: set[str] = set()
        wanting: list[tuple[str, ModelState, list[str], float]] = []
        for model, m in self._models.items():
            holders = [n.name for n in nodes if n.eligible and holds_model(n, model)]
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

    def _preload(
        self,
        model: str,
        m: ModelState,
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
        # A turn it already acted on (replicas of it still pinned) gets more while its queue needs them:
        # by then its usual rate has caught up with the turn, and the rise no longer shows.
        if not (surging or self.rising(model, now) or m.pinned):
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
            if not n.eligible or not n.serves(model) or holds_model(n, model) or n.name in taken:
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
        holders = [n for n in nodes if n.eligible and holds_model(n, model)]
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
