"""A pull or create run on several nodes at once, answered as ONE progress stream in Ollama's format.

Each node is asked to stream (whatever the client asked): its progress lines keep the exchange alive
through a pull that may take an hour, and are merged (corral.domain.progress) into what the client
reads. A node that fails is named in the last line; the others still finish. `stream: false` waits
for every node and answers one object, as Ollama's waitForStream does (server/routes.go).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from corral.app.context import RequestRecord
from corral.app.fanout_targets import Audit, Targets
from corral.app.fleet import Node
from corral.domain.errors import UpstreamError, UpstreamStatus
from corral.domain.progress import Frame, ProgressMerger
from corral.net.client import build_head
from corral.net.response import Headers, Response
from corral.protocol import wire

log = logging.getLogger(__name__)

NDJSON = b"application/x-ndjson"
Emit = Callable[[list[Frame]], None]


def error_text(body: bytes, status: int) -> str:
    """The message of a node's error answer (`{"error": ...}`, or its text)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    text = body.decode("utf-8", "replace").strip()
    return text or f"the node answered {status}"


def failure(nodes: int, statuses: list[int], message: str) -> UpstreamStatus:
    """The error when no node succeeded before anything was sent: the nodes' own status when they all
    agree (a 400 for a bad name stays a 400), else 500 as Ollama answers a failed stream:false pull."""
    status = statuses[0] if len(statuses) == nodes and len(set(statuses)) == 1 else 500
    return UpstreamStatus(message, status, wire.ollama_error(message), [(b"content-type", wire.JSON)], False)


class _Outbox:
    """Merged lines waiting for the client. A newer line for a digest replaces an unsent older one, so a
    slow client reads the latest progress instead of a growing backlog."""

    def __init__(self) -> None:
        self.pending: dict[str, Frame] = {}
        self.ready = asyncio.Event()

    def put(self, frames: list[Frame]) -> None:
        for frame in frames:
            key = str(frame.get("digest") or "status:" + str(frame.get("status")))
            self.pending.pop(key, None)
            self.pending[key] = frame
        if frames:
            self.ready.set()

    def take(self) -> bytes:
        frames, self.pending = self.pending, {}
        self.ready.clear()
        return b"".join(wire.dumps(f) + b"\n" for f in frames.values())


class ProgressFanout:
    def __init__(self, targets: Targets, connect_s: float, idle_s: float, audit: Audit | None) -> None:
        self.targets = targets
        self.connect_s = connect_s
        self.idle_s = idle_s
        self.audit = audit

    async def _exchange(
        self, node: Node, path: str, body: bytes, headers: Headers, merger: ProgressMerger, emit: Emit
    ) -> tuple[bool, int, str]:
        """One node's stream, fed to `merger` line by line. Returns (succeeded, status, error)."""
        pool = node.pool
        conn = await pool.acquire(self.connect_s)
        head = build_head("POST", (node.settings.base_path + path).encode(), pool.host_header, headers, len(body))
        saw: dict[str, Any] = {"success": False, "error": None}
        rest = b""

        def line(raw: bytes) -> None:
            if not raw.strip():
                return
            try:
                frame = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return
            if not isinstance(frame, dict):
                return
            if frame.get("error") is not None:
                saw["error"] = str(frame["error"])
            elif frame.get("status") == "success":
                saw["success"] = True
            else:
                emit(merger.feed(node.name, frame))

        def sink(data: bytes) -> None:
            nonlocal rest
            *lines, rest = (rest + data).split(b"\n")
            for raw in lines:
                line(raw)

        try:
            conn.send(head, body, first_byte_s=self.idle_s)
            upstream = await conn.response()
            if upstream.status != 200:
                parts: list[bytes] = []
                conn.attach(parts.append)
                conn.watch(self.idle_s, self.idle_s)
                await conn.finished()
                conn.release()
                return False, upstream.status, error_text(b"".join(parts), upstream.status)
            conn.attach(sink)
            conn.watch(self.idle_s, float("inf"))
            await conn.finished()
        except BaseException:
            conn.close()
            raise
        conn.release()
        line(rest)
        if saw["error"] is not None:
            return False, 500, str(saw["error"])
        if not saw["success"]:
            return False, 500, "the node ended its answer before success"
        return True, 200, ""

    async def _one(
        self,
        node: Node,
        path: str,
        body: bytes,
        headers: Headers,
        merger: ProgressMerger,
        emit: Emit,
        heads: dict[str, int],
        record: RequestRecord,
        model: str,
    ) -> None:
        try:
            ok, status, error = await self._exchange(node, path, body, headers, merger, emit)
        except UpstreamError as exc:
            ok, status, error = False, 502, exc.message
        except Exception as exc:  # one node's surprise must not leave the merged stream waiting for it
            log.exception("fan-out %s on node %s failed", path, node.name)
            ok, status, error = False, 500, f"unexpected error: {exc}"
        heads[node.name] = status
        await self.targets.discovery.refresh(node)  # routing sees the change before the client does
        emit(merger.succeed(node.name) if ok else merger.fail(node.name, error))
        if self.audit is not None:
            detail: dict[str, object] = {"node": node.name, "model": model, "request_id": record.request_id}
            detail.update({"status": "ok"} if ok else {"status": "failed", "error": error})
            self.audit(f"model.{path.rsplit('/', 1)[-1]}", detail)

    async def run(
        self,
        nodes: list[Node],
        path: str,
        doc: dict[str, Any],
        headers: Headers,
        response: Response,
        record: RequestRecord,
        model: str,
        stream: bool,
    ) -> None:
        verb = path.rsplit("/", 1)[-1]
        merger = ProgressMerger([n.name for n in nodes], verb)
        outbox = _Outbox()
        body = orjson.dumps({**doc, "stream": True})
        headers = [*headers, (b"content-type", b"application/json")]
        heads: dict[str, int] = {}
        tasks = [
            asyncio.create_task(self._one(n, path, body, headers, merger, outbox.put, heads, record, model))
            for n in nodes
        ]
        own = [(b"x-request-id", record.request_id.encode()), (b"x-corral-nodes", ",".join(merger.nodes).encode())]
        try:
            if not stream:
                await asyncio.gather(*tasks)
                self._finish_whole(merger, heads, response, record, own)
                return
            # The stream starts with the first line any node sends (a 200 promises progress), unless
            # every node has refused by then: that is answered as a plain error with their status.
            while not outbox.pending and not merger.finished:
                first = asyncio.ensure_future(outbox.ready.wait())
                await asyncio.wait([first, *(t for t in tasks if not t.done())], return_when=asyncio.FIRST_COMPLETED)
                first.cancel()
            if merger.finished and not merger.succeeded:
                raise failure(len(nodes), list(heads.values()), merger.error_message() or "failed")
            record.status = 200
            response.start(200, [(b"content-type", NDJSON), *own])
            pending = set(tasks)
            while pending or outbox.pending:
                if outbox.pending:
                    await response.write(outbox.take())
                    continue
                waiter = asyncio.ensure_future(outbox.ready.wait())
                done, _ = await asyncio.wait([waiter, *pending], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                pending -= done
            await response.write(wire.dumps(merger.outcome()) + b"\n")
            response.end()
        finally:
            for task in tasks:
                task.cancel()  # the client left: the nodes' pulls stop too, as Ollama's does

    @staticmethod
    def _finish_whole(
        merger: ProgressMerger, heads: dict[str, int], response: Response, record: RequestRecord, own: Headers
    ) -> None:
        message = merger.error_message()
        if message is not None:
            raise failure(len(merger.nodes), list(heads.values()), message)
        record.status = 200
        response.send(200, [(b"content-type", wire.JSON), *own], wire.dumps({"status": "success"}))
