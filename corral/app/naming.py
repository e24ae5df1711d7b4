"""Which model a request ends up on, and the name each node is sent: the fallback chain's choice of
a node, and the body rewritten for a node that knows the model by another name (an alias, a catalog
entry pooling several names, a fallback)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from corral.app.admission import Admission
from corral.app.fleet import Node
from corral.app.headers import Outbound
from corral.config import ModelPolicy
from corral.domain.catalog import Catalog
from corral.domain.errors import GatewayError, NoHealthyNode, NoSuchModel, Overloaded, QueueTimeout
from corral.domain.fleet import RouteRequest
from corral.domain.names import normalize
from corral.domain.record import RequestRecord
from corral.protocol.body import encode
from corral.protocol.echo import ModelEcho

# What sends a request on to its model's next fallback: nothing can take it in time.
FALL_BACK_ON = (NoHealthyNode, NoSuchModel, QueueTimeout, Overloaded)


async def choose(
    admission: Admission, chain: Sequence[RouteRequest], tried: frozenset[str], record: RequestRecord
) -> tuple[Node, RouteRequest, int]:
    """A node for the first model of `chain` (the requested one, then its fallbacks) that can take the
    request, its slot taken, and that model's place in the chain. When none can, the first model's error,
    unless the last one was shed (queue.shed_after_s): then the whole chain is busy, and the client is
    told when to retry."""
    first: GatewayError | None = None
    for index, route in enumerate(chain):
        if tried:
            route = replace(route, exclude=tried)
        try:
            return await admission.choose(route, record), route, index
        except FALL_BACK_ON as exc:
            if index == len(chain) - 1:
                if first is not None and not isinstance(exc, Overloaded):
                    raise first from exc
                raise
            first = first or exc
    raise AssertionError("an empty chain")


def for_node(
    node: Node, model: str, requested: str | None, out: Outbound, doc: dict[str, Any] | None
) -> tuple[Outbound, dict[str, Any] | None, ModelEcho | None]:
    """`out` and `doc` with the model named as `node` lists it, when that is not what the client sent,
    and the echo that renames it back in the answer; as they are otherwise."""
    if requested is None or doc is None or not model:
        return out, doc, None
    native = node.native_name(model)
    if native is None or normalize(native) == normalize(requested):
        return out, doc, None
    field = "model" if "model" in doc or "name" not in doc else "name"  # /api/show's legacy `name`
    doc = {**doc, field: native}
    return Outbound(out.method, out.target, out.headers, encode(doc)), doc, ModelEcho(native, requested)


class ModelTargets:
    """The models a request may go to: the one its name resolves to (alias, catalog entry) with that
    model's node group, then its fallbacks (`models.<name>`), each under its own policy."""

    def __init__(
        self, catalog: Catalog, policies: Mapping[str, ModelPolicy], shed_after_s: float | None = None
    ) -> None:
        self.catalog = catalog
        self.shed_after_s = shed_after_s  # queue.shed_after_s: every route's shed_after_s (set by the caller)
        self.policies = {catalog.resolve(normalize(name)): p for name, p in policies.items()}

    def node_groups(self) -> dict[str, Mapping[str, str]]:
        """Each model's node group (`models.<name>.nodes`) by catalog key."""
        return {key: p.nodes for key, p in self.policies.items() if p.nodes}

    def resolve(self, name: str) -> str:
        """The catalog key (normalised) a client's model name stands for."""
        return self.catalog.resolve(normalize(name))

    def chain(self, base: RouteRequest, allowed: Callable[[str], bool]) -> tuple[RouteRequest, list[RouteRequest]]:
        """`base` (its model a catalog key) under its policy, and the fallbacks `allowed` lets it use,
        each with `base.shed_after_s`."""
        policy = self.policies.get(base.model)
        if policy is None:
            return base, []
        primary = replace(base, nodes=policy.nodes)
        names: list[str] = []
        for fallback in policy.fallbacks:
            key = self.resolve(fallback)
            if key != base.model and key not in names and allowed(key):
                names.append(key)
        if not names:
            return primary, []
        routes = [primary]
        for key in names:
            own = self.policies.get(key)
            # Another model's runner holds another prompt cache: no prefix preference.
            routes.append(replace(base, model=key, nodes=own.nodes if own else None, prefer=None))
        # Every model but the last waits at most its fallback_after_s for a node.
        for i in range(len(routes) - 1):
            own = self.policies.get(routes[i].model)
            if own is not None and own.fallback_after_s is not None:
                routes[i] = replace(routes[i], max_wait_s=own.fallback_after_s)
        return routes[0], routes[1:]
