"""Fleet-wide answers Corral composes itself: `/`, `/api/version`, `/api/tags`, `/api/ps`, `/v1/models`,
`/health`, `/ready` and `/internal/status`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from corral import __version__
from corral.adapters.node_api import get_json
from corral.app.context import RequestRecord
from corral.app.discovery import parse_time
from corral.app.fleet import Fleet, Node
from corral.app.scopes import reachable, visible
from corral.domain.errors import NoSuchModel, UpstreamError
from corral.domain.fleet import NodeKind
from corral.domain.groups import matches
from corral.domain.names import normalize
from corral.net.response import Request, Response
from corral.protocol import wire

JSON_HEADERS = [(b"content-type", wire.JSON)]


def send_json(response: Response, record: RequestRecord, obj: object, status: int = 200) -> None:
    record.status = status
    response.send(status, [*JSON_HEADERS, (b"x-request-id", record.request_id.encode())], wire.dumps(obj))


def _version_tuple(version: str) -> tuple[int, ...]:
    core = version.lstrip("v").split("-", 1)[0]
    try:
        return tuple(int(p) for p in core.split("."))
    except ValueError:
        return (0,)


def _renamed(entry: dict[str, Any], name: str) -> dict[str, Any]:
    """A listing entry under another name (a catalog name, an alias), the rest as the node gave it."""
    return {**entry, "name": name, "model": name}


class FleetViews:
    def __init__(self, fleet: Fleet, started_at: float, ps_timeout_s: float = 5.0) -> None:
        self.fleet = fleet
        self.started_at = started_at
        self.ps_timeout_s = ps_timeout_s
        self.shutting_down = False
        # models.<name>.nodes by catalog key: a node outside a model's group does not list it.
        self.model_groups: Mapping[str, Mapping[str, str]] = {}
        # With workers (app/serve.py): the siblings' own status, for /internal/status to add up.
        self.siblings_status: Callable[[], Awaitable[list[Any]]] | None = None

    def _serving(self) -> list[Node]:
        return [n for n in self.fleet if n.health.up]

    async def root(self, request: Request, response: Response, record: RequestRecord) -> None:
        record.status = 200
        response.send(200, [(b"content-type", b"text/plain; charset=utf-8")], b"Ollama is running")

    async def version(self, request: Request, response: Response, record: RequestRecord) -> None:
        versions = [n.version for n in self._serving() if n.version]
        # The lowest node version is the feature level the fleet can promise (as Open WebUI reads it).
        lowest = min(versions, key=_version_tuple) if versions else "0.0.0"
        send_json(response, record, {"version": lowest})

    def union_tags(self, record: RequestRecord | None = None, holders: bool = False) -> list[dict[str, Any]]:
        """Every model the fleet (or, with `record`, the request's key) can reach: one entry per catalog
        name, whatever each node calls it, and one per alias of a listed model. With `holders`, each entry
        also names the nodes that have it in an extra field, `corral_nodes` (clients read only the fields
        they know: ollama-python's models ignore it)."""
        catalog = self.fleet.catalog
        seen: dict[str, dict[str, Any]] = {}
        where: dict[str, list[str]] = {}
        for node in self._serving():
            if record is not None and not reachable(record, node.settings.labels):
                continue
            view_pinned = {normalize(m) for m in node.settings.models} if node.settings.models else None
            for name, entry in node.tags.items():
                if view_pinned is not None and name not in view_pinned:
                    continue
                key = catalog.key_of(name)
                if record is not None and not visible(record, key):
                    continue
                if not matches(node.settings.labels, self.model_groups.get(key)):
                    continue
                where.setdefault(key, []).append(node.name)
                if key not in seen:
                    seen[key] = entry if key == name else _renamed(entry, catalog.display(key))
        for alias, key in catalog.aliases_of(seen):
            if alias not in seen:
                seen[alias] = _renamed(seen[key], catalog.display(alias))
                where[alias] = where[key]
        if holders:
            seen = {name: {**entry, "corral_nodes": where[name]} for name, entry in seen.items()}
        return sorted(seen.values(), key=lambda e: parse_time(e.get("modified_at")), reverse=True)

    async def tags(self, request: Request, response: Response, record: RequestRecord) -> None:
        send_json(response, record, {"models": self.union_tags(record, holders=True)})

    async def ps(self, request: Request, response: Response, record: RequestRecord) -> None:
        nodes = [n for n in self._serving() if n.kind is NodeKind.OLLAMA and reachable(record, n.settings.labels)]
        key_of = self.fleet.catalog.key_of

        async def one(node: Node) -> list[dict[str, Any]]:
            try:
                data = await get_json(node.pool, node.settings.base_path + "/api/ps", self.ps_timeout_s)
            except UpstreamError:
                return node.ps  # the last known list beats a hole in the view
            models = data.get("models") if isinstance(data, dict) else None
            return [m for m in models or [] if isinstance(m, dict)]

        # One entry per (model, node): a model loaded on three nodes is listed three times, each naming
        # its node in an extra field, `corral_node`, that clients ignore (`ollama ps` shows them all).
        models: list[dict[str, Any]] = []
        for node, entries in zip(nodes, await asyncio.gather(*(one(n) for n in nodes)), strict=True):
            for entry in entries:
                key = normalize(str(entry.get("model") or entry.get("name") or ""))
                if visible(record, key_of(key)):
                    models.append({**entry, "corral_node": node.name})
        models.sort(key=lambda e: parse_time(e.get("expires_at")), reverse=True)
        send_json(response, record, {"models": models})

    @staticmethod
    def _openai_model(entry: dict[str, Any], requested: str | None = None) -> dict[str, Any]:
        name = str(entry.get("model") or entry.get("name"))
        modified = parse_time(entry.get("modified_at"))
        owner = name.split("/")[-2] if name.count("/") >= 1 else "library"
        return {
            "id": requested or name,
            "object": "model",
            "created": int(modified) if modified != float("inf") else 0,
            "owned_by": owner,
        }

    async def v1_models(self, request: Request, response: Response, record: RequestRecord) -> None:
        data = [self._openai_model(e) for e in self.union_tags(record)]
        send_json(response, record, {"object": "list", "data": data})

    async def v1_model(self, request: Request, response: Response, record: RequestRecord) -> None:
        requested = record.path[len("/v1/models/") :]
        record.model = requested
        wanted = normalize(requested)
        for entry in self.union_tags(record):
            if normalize(str(entry.get("model") or entry.get("name"))) == wanted:
                send_json(response, record, self._openai_model(entry, requested))
                return
        raise NoSuchModel(f"model '{requested}' not found")

    async def health(self, request: Request, response: Response, record: RequestRecord) -> None:
        send_json(response, record, {"status": "ok"})

    async def ready(self, request: Request, response: Response, record: RequestRecord) -> None:
        if self.shutting_down:
            send_json(response, record, {"status": "shutting down"}, 503)
        elif self.fleet.any_up:
            send_json(response, record, {"status": "ready"})
        else:
            send_json(response, record, {"status": "no healthy node"}, 503)

    def status(self, now: float, queue_len: int) -> dict[str, Any]:
        nodes = []
        for node in self.fleet:
            nodes.append(
                {
                    "name": node.name,
                    "url": node.settings.url,
                    "type": node.settings.type,
                    "state": "draining" if node.draining else ("up" if node.health.up else "down"),
                    "breaker": node.breaker.state.value,
                    "in_flight": node.in_flight,
                    "requests_total": node.requests_total,
                    "failures_total": node.failures_total,
                    "completion_tokens_total": node.completion_tokens_total,
                    "ttft_sum_s": round(node.ttft_sum, 6),
                    "ttft_count": node.ttft_count,
                    "last_error": node.last_error,
                    "version": node.version,
                    "priority": node.settings.priority,
                    "max_concurrency": node.settings.max_concurrency,
                    "labels": dict(node.settings.labels),
                    "models": sorted(node.tags),
                    "digests": {name: entry.get("digest") for name, entry in sorted(node.tags.items())},
                    "loaded": [
                        {
                            "model": m.model,
                            "size_vram": m.size_vram,
                            "expires_at": datetime.fromtimestamp(m.expires_at).astimezone().isoformat()
                            if m.expires_at != float("inf")
                            else None,
                        }
                        for m in node.loaded
                    ],
                }
            )
        return {
            "version": __version__,
            "uptime_s": round(now - self.started_at, 3),
            "ready": self.fleet.any_up and not self.shutting_down,
            "queue": {"waiting": queue_len},
            "nodes": nodes,
        }
