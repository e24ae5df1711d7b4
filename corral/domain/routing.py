"""Routing strategies: a function from a fleet snapshot and a request to a node (or a reason why not).

Every strategy picks only nodes that may serve the model, are up, admit through their breaker, are not
draining, are not excluded and are below their concurrency cap. Strategies may keep small state (a
round-robin cursor, affinity) but never read a clock: `now` is an argument.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from corral.domain.candidates import candidates, is_loaded, rotate
from corral.domain.fleet import NodeView, NoRoute, Pick, RouteRequest
from corral.domain.model_aware import ModelAware


class Strategy(Protocol):
    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute: ...

    def first_token(
        self, node: str, model: str, options_key: str, now: float, timed: bool = True, sent_at: float | None = None
    ) -> None:
        """The gateway saw the first byte of an answer for `model` from `node` (`timed`: a streamed
        answer, so its first byte came with the first token, not at the end; `sent_at`: when the request
        was sent there, if known)."""

    def finished(
        self, node: str, model: str, service_s: float, now: float, output: int | None = None, started: bool = True
    ) -> None:
        """A request for `model` on `node` held its slot for `service_s` (first byte to last). With
        `output` (its expected output tokens, `RouteRequest.est_output`), nothing is to be learnt from
        it (cut short, an error answer): it is only forgotten (`started`: `first_token` was reported
        for it)."""

    def load_failed(self, node: str, model: str, options_key: str, sent_at: float) -> None:
        """A request sent at `sent_at` that needed a load of `model` on `node` failed before any answer
        (refused, unreachable): the load it would have started there is not coming."""


class _Blind:
    """Strategies that do not learn from what the gateway observes."""

    def first_token(
        self, node: str, model: str, options_key: str, now: float, timed: bool = True, sent_at: float | None = None
    ) -> None:
        return None

    def finished(
        self, node: str, model: str, service_s: float, now: float, output: int | None = None, started: bool = True
    ) -> None:
        return None

    def load_failed(self, node: str, model: str, options_key: str, sent_at: float) -> None:
        return None


class RoundRobin(_Blind):
    def __init__(self) -> None:
        self._cursor = 0

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        self._cursor += 1
        node = free[self._cursor % len(free)]
        return Pick(node.name, cold=not is_loaded(node, req))


class LeastConnections(_Blind):
    def __init__(self) -> None:
        self._cursor = 0

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        self._cursor += 1
        rotated = rotate(free, self._cursor)
        node = min(rotated, key=lambda n: n.in_flight / n.weight)
        return Pick(node.name, cold=not is_loaded(node, req))


class Priority(_Blind):
    """Highest priority first; within one priority, least connections; lower ones only as fallback."""

    def __init__(self) -> None:
        self._inner = LeastConnections()

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        top = max(n.priority for n in free)
        return self._inner.pick([n for n in free if n.priority == top], req, now)


class PowerOfTwo(_Blind):
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, nodes: Sequence[NodeView], req: RouteRequest, now: float) -> Pick | NoRoute:
        free = candidates(nodes, req)
        if isinstance(free, NoRoute):
            return free
        pair = self._rng.sample(free, 2) if len(free) > 1 else free
        node = min(pair, key=lambda n: n.in_flight / n.weight)
        return Pick(node.name, cold=not is_loaded(node, req))


def make_strategy(name: str, rng: random.Random | None = None) -> Strategy:
    strategies: dict[str, Strategy] = {
        "round-robin": RoundRobin(),
        "least-connections": LeastConnections(),
        "priority": Priority(),
        "power-of-two": PowerOfTwo(rng),
        "model-aware": ModelAware(),
    }
    try:
        return strategies[name]
    except KeyError:
        raise ValueError(f"unknown routing strategy {name!r}; one of {', '.join(strategies)}") from None
