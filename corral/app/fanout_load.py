"""Loading and unloading a model across the fleet: the empty generate/chat requests `ollama run` and
`ollama stop` send (server/routes.go, GenerateHandler and ChatHandler: an empty prompt, or no messages,
loads the model; with keep_alive 0 it unloads it, and either answers one object, done_reason "load" or
"unload").

- unload: every node where the model is loaded (a model loaded on three nodes is stopped on three);
  where it is loaded nowhere, routing picks a node as before (its answer is the same);
- load: the node routing picks, as before; with `X-Corral-Fanout: all`, every target node that has the
  model (`models.default_targets`), to warm the fleet before traffic arrives.

With X-Corral-Node, or `default_targets: reject`, neither applies and the request is routed as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral.adapters.node_api import call
from corral.app.context import RequestRecord
from corral.app.fanout_progress import error_text, failure
from corral.app.fanout_targets import Audit, Targets
from corral.app.fleet import Node
from corral.app.headers import forward_headers
from corral.domain.errors import UpstreamError
from corral.domain.keep_alive import LOAD_ROUTES, empty_request, unload_requested
from corral.domain.names import normalize
from corral.net.response import Request, Response


class LoadFanout:
    def __init__(self, targets: Targets, timeout_s: float, audit: Audit | None) -> None:
        self.targets = targets
        self.timeout_s = timeout_s
        self.audit = audit

    def wants(self, request: Request, route: str, doc: dict[str, Any]) -> bool:
        """Cheap: whether this request is a fleet load or unload (checked on every generate and chat)."""
        if route not in LOAD_ROUTES or not empty_request(doc, route) or request.header(b"x-corral-node"):
            return False
        if self.targets.policy == "reject":
            return False
        if unload_requested(doc, route):
            return True
        fanout = request.header(b"x-corral-fanout")
        return fanout is not None and fanout.strip().lower() == b"all"

    async def __call__(
        self, request: Request, response: Response, record: RequestRecord, doc: dict[str, Any], model: str
    ) -> bool:
        """Serve the load or unload on its nodes; False when routing should serve it as usual."""
        route = record.route
        if unload_requested(doc, route):
            action, nodes = "unload", await self.targets.loaded(model)
        else:
            key = normalize(model)
            holders = await self.targets.holding(model)
            wanted = {n.name for n in self.targets.for_model(model)}
            action, nodes = "load", [n for n in holders if n.name in wanted and key in n.tags]
        if not nodes:
            return False
        headers = [*forward_headers(request, record.request_id), (b"content-type", b"application/json")]

        async def one(node: Node) -> tuple[int, bytes]:
            path = node.settings.base_path + route
            try:
                status, body = await call(
                    node.pool, "POST", path, body=request.body, timeout_s=self.timeout_s, headers=headers
                )
            except UpstreamError as exc:
                return 502, exc.message.encode()
            await self.targets.discovery.refresh(node)  # /api/ps and routing see it loaded or gone
            return status, body

        answers = await asyncio.gather(*(one(n) for n in nodes))
        failed: dict[str, str] = {}
        for node, (status, body) in zip(nodes, answers, strict=True):
            error = "" if status < 300 else error_text(body, status)
            if error:
                failed[node.name] = error
            if self.audit is not None:
                detail: dict[str, object] = {"node": node.name, "model": model, "request_id": record.request_id}
                detail.update({"status": "ok"} if not error else {"status": "failed", "error": error})
                self.audit(f"model.{action}", detail)
        if failed:
            if len(failed) == len(nodes) and len(set(failed.values())) == 1:
                message = next(iter(failed.values()))
            else:
                message = f"the {action} failed on " + "; ".join(f"node {n}: {e}" for n, e in failed.items())
            raise failure(len(nodes), [s for s, _ in answers if s >= 300], message)
        status, body = answers[0]
        record.status = status
        own = [
            (b"x-request-id", record.request_id.encode()),
            (b"x-corral-nodes", ",".join(n.name for n in nodes).encode()),
        ]
        response.send(status, [(b"content-type", b"application/json; charset=utf-8"), *own], body)
        return True
