"""Admin routes for fleet model operations (the `corral models` and `corral nodes` commands use them):

- `GET /admin/models`: the per-node inventory from discovery's view (available, loaded, VRAM, digest)
  and the models whose digest differs between nodes (drift);
- `POST /admin/models/{warm|unload|check}` `{"model", "node", "keep_alive"}`: one model call on one node;
- `POST /admin/rollouts` `{"model", "nodes"?, "keep_alive"?, "resume"?}` starts (or resumes) a rolling
  update in the background; `GET /admin/rollouts` lists where each stands.

Pull and delete on one node are Ollama's own routes with `X-Corral-Node` (app/node_ops.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from corral.adapters.rollout_store import SqlRolloutStore
from corral.app.context import RequestRecord
from corral.app.discovery import Discovery
from corral.app.fleet import Fleet, Node
from corral.app.model_calls import ModelCallFailed, ModelCalls
from corral.app.preload import Preloader, load_placement
from corral.app.rollout import Rollouts, state_json
from corral.app.views import send_json
from corral.config import Settings
from corral.domain.errors import InvalidRequest, NoSuchNode, NotFound, UpstreamStatus
from corral.domain.fleet import NodeKind
from corral.domain.keep_alive import valid_keep_alive
from corral.domain.placement import NodeInventory, drift
from corral.net.response import Request, Response

_ACTIONS = ("warm", "unload", "check")


def _state(node: Node) -> str:
    return "draining" if node.draining else ("up" if node.health.up else "down")


def node_inventory(node: Node) -> dict[str, Any]:
    loaded = {m.model: m for m in node.loaded}
    models = []
    for name, entry in sorted(node.tags.items()):
        running = loaded.get(name)
        expires = None
        if running is not None and running.expires_at != float("inf"):
            expires = datetime.fromtimestamp(running.expires_at).astimezone().isoformat()
        models.append(
            {
                "model": name,
                "digest": str(entry.get("digest") or ""),
                "size": int(entry.get("size") or 0),
                "loaded": running is not None,
                "size_vram": running.size_vram if running else 0,
                "expires_at": expires,
            }
        )
    return {
        "name": node.name,
        "type": node.settings.type,
        "state": _state(node),
        "in_flight": node.in_flight,
        "labels": dict(getattr(node.settings, "labels", None) or {}),
        "models": models,
    }


def inventories(fleet: Fleet) -> list[NodeInventory]:
    return [
        NodeInventory(
            n.name,
            up=n.health.up,
            labels=dict(getattr(n.settings, "labels", None) or {}),
            models={name: str(e.get("digest") or "") for name, e in n.tags.items()},
            loaded=frozenset(m.model for m in n.loaded),
        )
        for n in fleet
        if n.kind is NodeKind.OLLAMA
    ]


def _body(request: Request) -> dict[str, Any]:
    try:
        doc = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"invalid JSON in request body: {exc.args[0]}") from exc
    if not isinstance(doc, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return doc


def _model(doc: dict[str, Any]) -> str:
    model = doc.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model is required", param="model")
    return model.strip()


def _keep_alive(doc: dict[str, Any]) -> str | None:
    raw = doc.get("keep_alive")
    if raw is None:
        return None
    value = valid_keep_alive(raw)
    if value is None:
        raise InvalidRequest(f"keep_alive: {raw!r} is not a duration such as 24h or -1", param="keep_alive")
    return value


class AdminModels:
    def __init__(
        self, fleet: Fleet, calls: ModelCalls, rollouts: Rollouts, audit: Callable[[str, dict[str, object]], None]
    ) -> None:
        self.fleet = fleet
        self.calls = calls
        self.rollouts = rollouts
        self.audit = audit

    async def inventory(self, request: Request, response: Response, record: RequestRecord) -> None:
        nodes = [node_inventory(n) for n in self.fleet if n.kind is NodeKind.OLLAMA]
        send_json(response, record, {"nodes": nodes, "drift": drift(inventories(self.fleet))})

    def _node(self, doc: dict[str, Any]) -> Node:
        name = doc.get("node")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("node is required", param="node")
        node = self.fleet.get(name)
        if node is None:
            raise NoSuchNode(f"no node named '{name}' (node); nodes: {', '.join(self.fleet.names())}")
        if node.kind is NodeKind.OPENAI:
            raise InvalidRequest(f"node '{name}' is an OpenAI-type node; it does not manage models", param="node")
        return node

    async def action(self, request: Request, response: Response, record: RequestRecord) -> None:
        action = record.path[len("/admin/models/") :]
        if action not in _ACTIONS:
            raise NotFound(f"no admin action POST /admin/models/{action} (one of: {', '.join(_ACTIONS)})")
        doc = _body(request)
        model, node, keep_alive = _model(doc), self._node(doc), _keep_alive(doc)
        record.model, record.node = model, node.name
        try:
            if action == "warm":
                await self.calls.warm(node, model, keep_alive)
            elif action == "unload":
                await self.calls.unload(node, model)
            else:
                await self.calls.check(node, model)
        except ModelCallFailed as exc:
            self.audit(f"model_{action}", {"model": model, "node": node.name, "ok": False, "by": record.key_name})
            # The node's refusal, named and passed on as a 502 in Ollama's error shape.
            body = orjson.dumps({"error": str(exc)})
            raise UpstreamStatus(str(exc), 502, body, [(b"content-type", b"application/json; charset=utf-8")]) from exc
        self.audit(f"model_{action}", {"model": model, "node": node.name, "ok": True, "by": record.key_name})
        send_json(response, record, {"status": "success", "model": model, "node": node.name})

    async def rollout_start(self, request: Request, response: Response, record: RequestRecord) -> None:
        doc = _body(request)
        model = _model(doc)
        nodes = doc.get("nodes")
        if nodes is not None and (not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes)):
            raise InvalidRequest("nodes: expected a list of node names", param="nodes")
        resuming = doc.get("resume", False)
        if not isinstance(resuming, bool):
            raise InvalidRequest("resume: expected true or false", param="resume")
        state = await self.rollouts.begin(model, nodes, _keep_alive(doc), resuming, record.key_name)
        send_json(response, record, state_json(state, True), 202)

    async def rollout_list(self, request: Request, response: Response, record: RequestRecord) -> None:
        states = await self.rollouts.store.all()
        running = await self.rollouts.running_anywhere()  # a sibling worker may run it (the state is stored)
        send_json(response, record, {"rollouts": [state_json(s, s.model in running) for s in states]})


def assemble_models_admin(
    settings: Settings, fleet: Fleet, discovery: Discovery, audit: Callable[[str, dict[str, object]], None] | None
) -> AdminModels:
    """The admin model routes, rolling updates (state in auth.store_url) and preloading on node up."""
    admin_audit = audit or (lambda action, detail: None)
    calls = ModelCalls(discovery, settings.timeouts.total_s, settings.timeouts.answer_s)
    store = SqlRolloutStore(settings.auth.store_url)
    rollouts = Rollouts(fleet, calls, store, admin_audit, settings.timeouts.total_s)
    m = settings.models
    discovery.on_up.append(Preloader(calls, load_placement(m.placement_file), m.preload_keep_alive).on_up)
    return AdminModels(fleet, calls, rollouts, admin_audit)
