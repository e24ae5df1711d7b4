"""Run-time fleet changes: add, remove, drain and undrain nodes, with no restart (`/admin/backends`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from corral.app.context import RequestRecord
from corral.app.fleet import Fleet, Node
from corral.app.fleet_sync import FleetSync
from corral.app.views import FleetViews, send_json
from corral.config import BackendSettings
from corral.domain.errors import InvalidRequest, NoSuchNode, NotFound
from corral.net.response import Request, Response


def _node_summary(node: Node, elsewhere: dict[str, int] | None = None) -> dict[str, object]:
    return {
        "name": node.name,
        "url": node.settings.url,
        "type": node.settings.type,
        "state": "draining" if node.draining else ("up" if node.health.up else "down"),
        "in_flight": node.in_flight + (elsewhere or {}).get(node.name, 0),
    }


class AdminBackends:
    """Each change goes to the fleet store (the key store's database when there is one, so every replica
    and worker follows it) and is then applied here through `FleetSync`, as other processes apply it."""

    def __init__(
        self,
        fleet: Fleet,
        sync: FleetSync,
        audit: Callable[[str, dict[str, object]], None] | None = None,
        views: FleetViews | None = None,
    ) -> None:
        self.audit = audit or (lambda action, detail: None)
        self.fleet = fleet
        self.sync = sync
        self.views = views  # with workers, its link to the siblings: in_flight counts the whole replica

    async def _siblings(self) -> list[Any]:
        if self.views is None or self.views.siblings_status is None:
            return []
        return await self.views.siblings_status()

    async def _elsewhere(self) -> dict[str, int]:
        """Requests in flight per node in the sibling workers."""
        counts: dict[str, int] = {}
        for other in await self._siblings():
            for node in other.get("nodes", []) if isinstance(other, dict) else []:
                counts[node["name"]] = counts.get(node["name"], 0) + int(node.get("in_flight", 0))
        return counts

    async def list(self, request: Request, response: Response, record: RequestRecord) -> None:
        elsewhere = await self._elsewhere()
        send_json(response, record, {"backends": [_node_summary(n, elsewhere) for n in self.fleet]})

    async def add(self, request: Request, response: Response, record: RequestRecord) -> None:
        try:
            doc = orjson.loads(request.body or b"null")
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"invalid JSON in request body: {exc.args[0]}") from exc
        try:
            settings = BackendSettings.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(body)"
            raise InvalidRequest(f"{field}: {first['msg']}", param=field) from exc
        if self.fleet.get(settings.name) is not None:
            raise InvalidRequest(f"a node named '{settings.name}' already exists", param="name")
        node = await self.sync.add(settings, record.key_name)
        if node is None:  # removed again by another replica in the same instant
            raise NoSuchNode(f"node '{settings.name}' was removed while being added")
        self.audit("node_added", {"name": settings.name, "url": settings.url, "by": record.key_name})
        send_json(response, record, _node_summary(node), 201)

    async def by_name(self, request: Request, response: Response, record: RequestRecord) -> None:
        rest = record.path[len("/admin/backends/") :]
        name, _, action = rest.partition("/")
        node = self.fleet.get(name)
        if node is None:
            raise NoSuchNode(f"no node named '{name}'")
        if request.method == "DELETE" and not action:
            await self.sync.remove(name, record.key_name)
            self.audit("node_removed", {"name": name, "by": record.key_name})
            send_json(response, record, {"removed": name})
        elif request.method == "POST" and action in ("drain", "undrain"):
            changed = await self.sync.set_draining(name, action == "drain", record.key_name)
            self.audit(f"node_{action}ed", {"name": name, "by": record.key_name})
            send_json(response, record, _node_summary(changed or node))
        elif request.method == "GET" and not action:
            send_json(response, record, _node_summary(node, await self._elsewhere()))
        else:
            raise NotFound(f"no admin action {request.method} /admin/backends/{rest}")
