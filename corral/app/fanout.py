"""Model management on the fleet (issue 11 §1): the calls that change models, made without
X-Corral-Node, act on several nodes and answer as one Ollama would.

- pull, create: on the target nodes (`models.default_targets`), one merged progress stream;
- delete, copy: on every node that has the model; when none has it, one node answers, so a bad name
  or an unknown model gets Ollama's own 400 or 404;
- blobs: HEAD and the upload on every managed node (corral.app.fanout_blobs);
- push: still one node, named by X-Corral-Node (one registry upload, from one copy).

Every node action is an audit record of its own (`model.<action>`, with the node), and re-reads that
node's models, so routing sees the change before the client hears back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral.adapters.node_api import call
from corral.app.context import RequestRecord
from corral.app.discovery import Discovery
from corral.app.fanout_blobs import BlobFanout
from corral.app.fanout_load import LoadFanout
from corral.app.fanout_progress import ProgressFanout, error_text, failure
from corral.app.fanout_targets import Audit, Targets
from corral.app.fleet import Fleet, Node
from corral.app.headers import forward_headers
from corral.config import Settings
from corral.domain.errors import NodeRequired, UpstreamError
from corral.net.response import Headers, Request, Response
from corral.protocol.body import read_body

# A model name is echoed into logs and audit records: a hostile 1 MB name must not be.
_NAME_CHARS = 200


def _model(doc: dict[str, Any], *fields: str) -> str | None:
    for name in fields:
        value = doc.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


class Fanout:
    def __init__(
        self, targets: Targets, connect_s: float, idle_s: float, timeout_s: float, audit: Audit | None
    ) -> None:
        self.targets = targets
        self.timeout_s = timeout_s
        self.audit = audit
        self.progress = ProgressFanout(targets, connect_s, idle_s, audit)
        self.blobs = BlobFanout(connect_s, idle_s, audit)

    @property
    def enabled(self) -> bool:
        return self.targets.policy != "reject"

    async def __call__(self, request: Request, response: Response, record: RequestRecord) -> None:
        route = record.route
        headers = forward_headers(request, record.request_id)
        if route == "/api/blobs/{digest}":
            nodes = self.targets.for_blobs()
            if request.method == "HEAD":
                await self.blobs.head(nodes, request, response, record, headers)
            else:
                await self.blobs.post(nodes, request, response, record, headers)
            return
        if route not in ("/api/pull", "/api/create", "/api/delete", "/api/copy"):
            raise NodeRequired(
                f"{request.method} {route} acts on one node; name it in the X-Corral-Node header "
                f"(one of: {', '.join(self.targets.fleet.names())})"
            )
        doc = read_body(request.body, route).doc
        if route in ("/api/pull", "/api/create"):
            model = _model(doc, "model", "name")
            if model is None:
                await self._relay_one(self.targets.managed()[:1], request, response, record, headers)
                return
            record.model = model[:_NAME_CHARS]
            nodes = self.targets.for_model(model)
            stream = doc.get("stream") is not False
            await self.progress.run(nodes, route, doc, headers, response, record, model, stream)
            return
        model = _model(doc, "source") if route == "/api/copy" else _model(doc, "model", "name")
        holders = await self.targets.holding(model) if model is not None else []
        if model is not None:
            record.model = model[:_NAME_CHARS]
        if not holders:
            # No node has it: one node answers, as Ollama would (a bad name is a 400, else a 404).
            await self._relay_one(self.targets.managed()[:1], request, response, record, headers)
            return
        await self._everywhere(holders, request, response, record, headers, model or "")

    async def _call(self, node: Node, request: Request, headers: Headers) -> tuple[int, bytes]:
        target = request.raw_path + (b"?" + request.query if request.query else b"")
        hdrs = [*headers, (b"content-type", b"application/json")]
        path = node.settings.base_path + target.decode("latin-1")
        return await call(node.pool, request.method, path, body=request.body, timeout_s=self.timeout_s, headers=hdrs)

    async def _relay_one(
        self, nodes: list[Node], request: Request, response: Response, record: RequestRecord, headers: Headers
    ) -> None:
        if not nodes:
            self.targets.for_blobs()  # raises: no healthy node
        node = nodes[0]
        record.node = node.name
        status, body = await self._call(node, request, headers)
        record.status = status
        content_type = b"application/json; charset=utf-8" if body else b"text/plain; charset=utf-8"
        response.send(status, [(b"content-type", content_type), (b"x-request-id", record.request_id.encode())], body)

    async def _everywhere(
        self,
        nodes: list[Node],
        request: Request,
        response: Response,
        record: RequestRecord,
        headers: Headers,
        model: str,
    ) -> None:
        """A small call (delete, copy) on each of `nodes` at once; one answer for the client."""
        action = record.route.rsplit("/", 1)[-1]

        async def one(node: Node) -> tuple[int, bytes]:
            try:
                status, body = await self._call(node, request, headers)
            except UpstreamError as exc:
                return 502, exc.message.encode()
            if status < 300:
                await self.targets.discovery.refresh(node)
            return status, body

        answers = await asyncio.gather(*(one(n) for n in nodes))
        failed: dict[str, tuple[int, str]] = {}
        for node, (status, body) in zip(nodes, answers, strict=True):
            error = "" if status < 300 else error_text(body, status)
            if status >= 300:
                failed[node.name] = (status, error)
            if self.audit is not None:
                detail: dict[str, object] = {"node": node.name, "model": model, "request_id": record.request_id}
                detail.update({"status": "ok"} if status < 300 else {"status": "failed", "error": error})
                self.audit(f"model.{action}", detail)
        names = ",".join(n.name for n in nodes).encode()
        if failed:
            if len(failed) == len(nodes) and len({e for _, e in failed.values()}) == 1:
                message = next(iter(failed.values()))[1]
            else:
                detail_text = "; ".join(f"{n}: {e}" for n, (_, e) in failed.items())
                plural = "s" if len(failed) > 1 else ""
                message = f"the {action} failed on node{plural} {', '.join(failed)}: {detail_text}"
            raise failure(len(nodes), [s for s, _ in failed.values()], message)
        status, body = answers[0]
        record.status = status
        own = [(b"x-request-id", record.request_id.encode()), (b"x-corral-nodes", names)]
        content_type = b"application/json; charset=utf-8" if body else b"text/plain; charset=utf-8"
        response.send(status, [(b"content-type", content_type), *own], body)


def fleet_operations(
    fleet: Fleet, discovery: Discovery, settings: Settings, audit: Audit | None
) -> tuple[Fanout, LoadFanout]:
    """The fan-out handlers, for the assembly: NodeOps.fanout and InferenceHandlers.fleet_load."""
    targets = Targets(fleet, discovery, settings.models)
    t = settings.timeouts
    fanout = Fanout(targets, t.connect_s, settings.models.fanout_idle_s, t.total_s, audit)
    return fanout, LoadFanout(targets, t.answer_s, audit)
