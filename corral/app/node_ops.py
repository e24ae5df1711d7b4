"""Calls that change a node's models (pull, push, create, copy, delete, blobs) on the one node named in
the X-Corral-Node header; without it, on the fleet (app/fanout.py) unless `models.default_targets` is
`reject`. A blob's body (model weights, any size) is
streamed to the node as it arrives, never held whole."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson

from corral.adapters.node_api import call
from corral.app.attempts import Forwarder
from corral.app.context import RequestRecord
from corral.app.discovery import Discovery
from corral.app.fleet import Fleet, Node
from corral.app.headers import forward_headers, outbound
from corral.domain.errors import InvalidRequest, NodeRequired, NoSuchNode, UpstreamTimeout
from corral.domain.fleet import NodeKind
from corral.net.client import build_head
from corral.net.response import Request, Response

if TYPE_CHECKING:
    from corral.app.fanout import Fanout

# Answers small enough to wait for: the fleet view is refreshed before the client hears back.
_BUFFERED = frozenset({"/api/copy", "/api/delete"})
_CHANGES_MODELS = frozenset({"/api/pull", "/api/create", "/api/copy", "/api/delete"})


def _not_streamed(body: bytes) -> bool:
    """`"stream": false` in a pull/create body: the answer is one small object, so it can wait for the
    fleet view to be refreshed (a relayed whole body would reach the client first)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("stream") is False


class NodeOps:
    def __init__(self, fleet: Fleet, forwarder: Forwarder, discovery: Discovery, timeout_s: float) -> None:
        self.fleet = fleet
        self.forwarder = forwarder
        self.discovery = discovery
        self.timeout_s = timeout_s
        self.fanout: Fanout | None = None

    def _node(self, request: Request, record: RequestRecord) -> Node:
        raw = request.header(b"x-corral-node")
        names = ", ".join(self.fleet.names()) or "none configured"
        if not raw:
            raise NodeRequired(
                f"{request.method} {record.route} changes the models on a node; name the node in the "
                f"X-Corral-Node header (one of: {names})"
            )
        name = raw.decode("latin-1").strip()
        node = self.fleet.get(name)
        if node is None:
            raise NoSuchNode(f"no node named '{name}' (X-Corral-Node); nodes: {names}")
        if node.kind is NodeKind.OPENAI:
            raise InvalidRequest(f"node '{name}' is an OpenAI-type node; it does not manage models")
        return node

    async def __call__(self, request: Request, response: Response, record: RequestRecord) -> None:
        fanout = self.fanout
        if fanout is not None and fanout.enabled and not request.header(b"x-corral-node"):
            await fanout(request, response, record)
            return
        node = self._node(request, record)
        record.node = node.name
        target = request.raw_path + (b"?" + request.query if request.query else b"")
        headers = forward_headers(request, record.request_id)
        route = record.route
        if route == "/api/blobs/{digest}" and request.method == "POST":
            await self._upload(node, request, response, record, target, headers)
            return
        if route in _BUFFERED or (route in _CHANGES_MODELS and _not_streamed(request.body)):
            status, body = await call(
                node.pool,
                request.method,
                node.settings.base_path + target.decode("latin-1"),
                body=request.body,
                timeout_s=self.timeout_s,
                headers=headers,
            )
            if status < 300:
                await self.discovery.refresh(node)
            record.status = status
            content_type = b"application/json; charset=utf-8" if body else b"text/plain; charset=utf-8"
            response.send(
                status,
                [
                    (b"content-type", content_type),
                    (b"x-request-id", record.request_id.encode()),
                    (b"x-corral-node", node.name.encode()),
                ],
                body,
            )
            return
        out = outbound(request, record.request_id)

        async def refresh(status: int) -> None:
            # Before the stream closes, so that a client that saw "success" also sees the model.
            if route in _CHANGES_MODELS and status < 300:
                await self.discovery.refresh(node)

        await self.forwarder.forward_to(node, record, out, response, before_end=refresh)

    async def _upload(
        self,
        node: Node,
        request: Request,
        response: Response,
        record: RequestRecord,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """POST /api/blobs/{digest}: the body goes to the node piece by piece as the client sends it."""
        length = request.content_length
        chunked = request.chunked
        if chunked:
            headers = [*headers, (b"transfer-encoding", b"chunked")]
        elif length is None:
            length = 0
        pool = node.pool
        head = build_head("POST", node.settings.base_path.encode() + target, pool.host_header, headers, length)
        conn = await pool.acquire(self.forwarder.timeouts.connect_s, fresh=True)
        parts: list[bytes] = []
        try:
            await conn.send_streaming(head, request.body_chunks(), chunked, self.timeout_s)
            upstream = await conn.response()
            conn.attach(parts.append)  # the node's answer to a blob is empty or a short error
            async with asyncio.timeout(self.timeout_s):
                await conn.finished()
        except TimeoutError as exc:
            conn.close()
            raise UpstreamTimeout(f"node {node.name} did not finish answering the blob upload") from exc
        except BaseException:
            conn.close()
            raise
        conn.release()
        record.status = upstream.status
        out = [(k, v) for k, v in upstream.headers if k == b"content-type"]
        out += [(b"x-request-id", record.request_id.encode()), (b"x-corral-node", node.name.encode())]
        response.send(upstream.status, out, b"".join(parts))
