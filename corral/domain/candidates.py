"""Which nodes a request may go to at all, shared by every routing strategy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from corral.domain.fit import fitting
from corral.domain.fleet import LoadedModel, NodeView, NoRoute, NoRouteReason, RouteRequest
from corral.domain.groups import matches


def candidates(nodes: Sequence[NodeView], req: RouteRequest) -> list[NodeView] | NoRoute:
    """Nodes that have the model and may serve it, are in the model's and the key's node groups, fit
    it (when any does), are up, admit through their breaker, are not draining or already tried, and
    are below their concurrency cap; else why there are none."""
    serving = [n for n in nodes if n.serves(req.model)]
    if not serving:
        return NoRoute(NoRouteReason.NO_SUCH_MODEL)
    if req.nodes:
        serving = [n for n in serving if matches(n.labels, req.nodes)]
        if not serving:
            return NoRoute(NoRouteReason.OUTSIDE_MODEL_GROUP)
    if req.key_nodes:
        serving = [n for n in serving if matches(n.labels, req.key_nodes)]
        if not serving:
            return NoRoute(NoRouteReason.OUTSIDE_KEY_GROUP)
    # A model goes only where it fits, when some node of the group fits it: a busy big node is waited
    # for rather than a small one sent a load it must refuse (corral/domain/fit.py).
    serving = fitting(serving, req.model)
    eligible = [n for n in serving if n.eligible and n.name not in req.exclude]
    if not eligible:
        return NoRoute(NoRouteReason.NO_HEALTHY_NODE)
    free = [n for n in eligible if n.max_concurrency is None or n.in_flight < n.max_concurrency]
    if not free:
        return NoRoute(NoRouteReason.ALL_FULL)
    return free


def rotate(free: list[NodeView], turn: int) -> list[NodeView]:
    """`free` started at position `turn` (modulo its length): ties between equal nodes go round."""
    start = turn % len(free)
    return free[start:] + free[:start]


def is_loaded(node: NodeView, req: RouteRequest) -> bool:
    """The node holds a runner for the model with the request's load-time options."""
    return holds(node.loaded, req)


def holds(runners: Iterable[LoadedModel], req: RouteRequest) -> bool:
    """One of `runners` serves the request's model with its load-time options."""
    return any(m.model == req.model and m.options_key == req.options_key for m in runners)
