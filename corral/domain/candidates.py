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
    if not req.nodes and not req.key_nodes:
        found = _one_pass(nodes, req, None)
        if found:
            return found
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


def _one_pass(nodes: Sequence[NodeView], req: RouteRequest, holding: list[int] | None) -> list[NodeView] | None:
    """`candidates` in one pass, for the common case (no node group, the model fits every node that
    has it): the same nodes in the same order, and into `holding` (when given) the positions among
    them of the nodes holding a runner of the request's model and options (`is_loaded`). None (the
    staged filter decides) when any node does not fit the model, since fit.py's rules then weigh the
    whole group."""
    model, options, exclude = req.model, req.options_key, req.exclude
    free: list[NodeView] = []
    for n in nodes:
        if (n.pinned is not None and model not in n.pinned) or model not in n.available:
            continue
        if (n.unfit and model in n.unfit) or (n.vram_bytes is not None and n.model_sizes.get(model, 0) > n.vram_bytes):
            return None
        if not n.up or not n.admits or n.draining or n.name in exclude:
            continue
        if n.max_concurrency is None or n.in_flight < n.max_concurrency:
            if holding is not None:
                for m in n.loaded:
                    if m.model == model and m.options_key == options:
                        holding.append(len(free))
                        break
            free.append(n)
    return free


def candidates_holding(nodes: Sequence[NodeView], req: RouteRequest) -> tuple[list[NodeView], list[int]] | None:
    """`candidates` for the common case, and the positions among them of the nodes holding the
    request's model (`_one_pass`). None when the common case does not apply or no node is a
    candidate: `candidates` decides then (and says why)."""
    if req.nodes or req.key_nodes:
        return None
    holding: list[int] = []
    free = _one_pass(nodes, req, holding)
    return (free, holding) if free else None


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
