"""Matching a request path to a route of the table, and the handler bound to its method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from corral.app.routes import RouteSpec
from corral.domain.record import RequestRecord
from corral.net.response import Request, Response

RouteHandler = Callable[[Request, Response, RequestRecord], Awaitable[None]]


@dataclass
class Route:
    """One path template: its facts and handler per method."""

    path: str
    specs: dict[str, RouteSpec] = field(default_factory=dict)
    handlers: dict[str, RouteHandler] = field(default_factory=dict)

    def spec(self, method: str) -> RouteSpec:
        """The facts for `method`; for a method the route does not serve (OPTIONS, 405), the first
        declared, so the guards still run with the route's strictest neighbour."""
        found = self.specs.get(method)
        if found is not None:
            return found
        return min(self.specs.values(), key=lambda s: s.access != "admin")


class Router:
    """Exact paths, plus prefix routes whose last segment is a parameter (`/v1/models/{model}`)."""

    def __init__(self) -> None:
        self.exact: dict[str, Route] = {}
        self.prefixed: list[tuple[str, Route]] = []

    @classmethod
    def from_table(cls, table: Iterable[RouteSpec], handlers: Mapping[str, RouteHandler]) -> Router:
        """Bind each route of `table` whose handler is in `handlers` (others, such as /admin/keys
        without a key store, are not served)."""
        router = cls()
        for spec in table:
            handler = handlers.get(spec.handler)
            if handler is not None:
                router.add(spec, handler)
        return router

    def add(self, spec: RouteSpec, handler: RouteHandler) -> None:
        path = spec.path
        if path.endswith("}"):
            prefix = path[: path.rindex("{")]
            route = next((r for p, r in self.prefixed if p == prefix), None)
            if route is None:
                route = Route(path)
                self.prefixed.append((prefix, route))
        else:
            route = self.exact.setdefault(path, Route(path))
        for method in spec.methods:
            route.specs[method] = spec
            route.handlers[method] = handler

    def match(self, path: str) -> Route | None:
        route = self.exact.get(path)
        if route is not None:
            return route
        for prefix, candidate in self.prefixed:
            if path.startswith(prefix) and len(path) > len(prefix):
                return candidate
        return None

    def routes(self) -> list[Route]:
        return [*self.exact.values(), *(r for _, r in self.prefixed)]
