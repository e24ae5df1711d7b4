"""Residency control: load a replica of a model that turns hot before requests queue for it, keep hot
models resident, and let them go when they cool (docs/routing.md, "Residency").

Routing alone adds a replica only once a request finds every loaded copy busy, and that request (and
the ones behind it) pay the load. This controller watches each model's arrival rate against what its
loaded replicas serve (slots ÷ service time, the routing cost model's figures) and, once that share
passes `hot` while the model is asked for well above its usual rate (a turn: steady traffic is
routing's to place), asks for one more replica at a time on a node with free room: one where the load
evicts nothing, else one where every runner Ollama would unload is idle, unpinned and either barely
used or using far fewer slots than the hot model lacks.
Replicas of a hot model are pinned (`keep_alive` -1: Ollama sorts them last when it picks a victim and
never expires them, server/sched.go `ByDurationAndName`); once the model's share stays below `cool` for
`cool_s`, they are unpinned (the default keep_alive again).

Pure: `observe` counts arrivals, `decide` returns actions for the caller to carry out (an empty-prompt
generate with keep_alive); time is an argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from corral.domain.fleet import LoadedModel, NodeView

PIN = "-1"
MAX_BACKOFF_S = 300.0


@dataclass(frozen=True, slots=True)
class ResidencyParams:
    hot: float = 1.0  # a model is hot above this share of what its loaded replicas can serve
    busy: float = 1.5  # ... or with more requests in flight than this share of its replicas' slots
    cool: float = 0.3  # ... and cool again below this, for `cool_s`
    window_s: float = 10.0  # arrival rates are averaged over about this long
    cool_s: float = 60.0
    min_rate: float = 0.05  # requests/s below which a model is never hot (one-off requests)
    settle_s: float = 10.0  # after a preload of a model, wait this long before another (it must load)
    keep_alive: str = "5m"  # what an unpinned replica goes back to
    victim_share: float = 0.15  # a runner may be evicted for a replica if its model stays below this elsewhere
    idle_node: float = 0.25  # only nodes with fewer requests in flight than this share of their slots
    fleet_busy: float = 0.3  # no eviction for a replica while the fleet has more than this share busy
    trend_window_s: float = 300.0  # the model's usual rate, averaged over about this long
    rise: float = 1.5  # a replica is preloaded only while the recent rate is this many times the usual one
    trade: float = 0.5  # runners in use may be evicted for a replica if they keep busy this share of the slots it lacks


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "preload" (load and pin), "pin", "unpin"
    node: str
    model: str
    keep_alive: str
    reason: str


@dataclass
class _Model:
    rate: float = 0.0  # decayed arrival count
    usual: float = 0.0  # the same over trend_window_s
    at: float = 0.0
    cool_since: float | None = None
    preload_at: float = -math.inf
    backoff_s: float = 0.0  # grows while preloads of this model do not stick (churn), resets when one does
    replicas_at_preload: int = 0
    pinned: set[str] = field(default_factory=set)  # nodes where we pinned it


ServiceTime = Callable[[NodeView, str], float]


class Residency:
    def __init__(self, params: ResidencyParams | None = None) -> None:
        self.p = params or ResidencyParams()
        self._models: dict[str, _Model] = {}
        self.recent: list[tuple[float, Action]] = []  # the last decisions, for /internal/status
        self._sizes: dict[str, int] = {}  # model -> resident bytes seen in /api/ps
        self._since: float | None = None  # the first arrival seen: how much history the usual rates have

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
        self, model: str, nodes: Sequence[NodeView], service_s: ServiceTime, now: float, usual: bool = False
    ) -> float:
        """Arrival rate (the recent one, or with `usual` the long-run one) over the rate its loaded
        replicas serve with every slot busy."""
        capacity = sum(
            max(1, n.parallel) * max(n.weight, 1e-9) / max(service_s(n, model), 1e-3)
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

    def decide(self, nodes: Sequence[NodeView], service_s: ServiceTime, now: float) -> list[Action]:
        actions: list[Action] = []
        hot: set[str] = set()
        for n in nodes:
            for lm in n.loaded:
                if lm.size or lm.size_vram:
                    self._sizes[lm.model] = max(lm.size, lm.size_vram)
        wanting: list[tuple[str, _Model, list[str], float]] = []
        for model, m in self._models.items():
            share = max(
                self.share(model, nodes, service_s, now), self.occupancy(model, nodes) * self.p.hot / self.p.busy
            )
            holders = [n.name for n in nodes if n.eligible and _holds(n, model)]
            if share > self.p.hot and self.rate(model, now) >= self.p.min_rate and holders:
                hot.add(model)
                m.cool_since = None
                actions += [self._act("pin", n, model, PIN, f"hot: {share:.0%} of its replicas' capacity")
                            for n in holders if n not in m.pinned]  # fmt: skip
                m.pinned.update(holders)
                wanting.append((model, m, holders, share))
                continue
            if share < self.p.cool:
                m.cool_since = now if m.cool_since is None else m.cool_since
            else:
                m.cool_since = None
            if m.pinned and m.cool_since is not None and now - m.cool_since >= self.p.cool_s:
                actions += [self._act("unpin", n, model, self.p.keep_alive, "cooled") for n in sorted(m.pinned)]
                m.pinned.clear()
        # Replicas once every hot model is known and pinned: a preload must not evict one found hot later.
        for model, m, holders, share in wanting:
            actions += self._preload(model, m, nodes, holders, hot, share, service_s, now)
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
        m: _Model,
        nodes: Sequence[NodeView],
        holders: list[str],
        hot: set[str],
        share: float,
        service_s: ServiceTime,
        now: float,
    ) -> list[Action]:
        """One more replica for a hot model, only while it is asked for well above its usual rate: a turn,
        not the steady traffic routing already places (and that a replica more would only churn)."""
        if m.backoff_s and now - m.preload_at >= self.p.settle_s and len(holders) > m.replicas_at_preload:
            m.backoff_s = 0.0  # the last replica stuck
        if now - m.preload_at < self.p.settle_s + m.backoff_s or not self.rising(model, now):
            return []
        target = self._room(nodes, model, hot | self._pinned_models(), service_s, now)
        if target is None:
            return []
        if now - m.preload_at < 2 * (self.p.settle_s + m.backoff_s) + self.p.window_s:
            # Hot again soon after the last preload: it did not stick, or did not help.
            m.backoff_s = min(MAX_BACKOFF_S, max(self.p.settle_s, 2 * m.backoff_s))
        m.replicas_at_preload = len(holders)
        m.preload_at = now
        m.pinned.add(target)
        return [self._act("preload", target, model, PIN, f"hot: {share:.0%}, one more replica")]

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
        service_s: ServiceTime,
        now: float,
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
        may_evict = may_evict and len(live) == len(nodes)
        for n in nodes:
            if not n.eligible or not n.serves(model) or _holds(n, model):
                continue
            if n.max_concurrency is not None and n.in_flight >= n.max_concurrency:
                continue
            if n.in_flight > self.p.idle_node * max(1, n.parallel) * max(1, len(n.loaded)):
                continue  # a busy node: a load there slows what it serves (and its loads queue)
            free = len(n.loaded) < n.max_loaded and self._fits(n, model)
            if free:
                rank = (0, len(n.loaded), n.name)
            elif may_evict and self._cold_victim(n, model, nodes, hot_models, service_s, now):
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
        service_s: ServiceTime,
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
        used = sum(self.usual_rate(v.model, now) * service_s(node, v.model) for v in victims)
        if used <= self.p.trade * self._shortfall(model, nodes, service_s, now):
            return True
        for victim in victims:
            if (
                max(self.rate(victim.model, now), self.usual_rate(victim.model, now)) >= self.p.min_rate
                and max(
                    self.share(victim.model, rest, service_s, now), self.share(victim.model, rest, service_s, now, True)
                )
                >= self.p.victim_share
            ):
                return False
        return True

    def _shortfall(self, model: str, nodes: Sequence[NodeView], service_s: ServiceTime, now: float) -> float:
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
        return max(0.0, queued, self.rate(model, now) * service_s(node, model) - slots)

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
