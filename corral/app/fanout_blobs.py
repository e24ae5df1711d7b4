"""`HEAD`/`POST /api/blobs/:digest` on several nodes: the upload that precedes `ollama create`.

POST: the client's body (model weights, any size) is teed to every target node as it arrives. Each
node has a queue of at most `QUEUE_PIECES` pieces; the next piece is read from the client only when
every node still taking the body has room, so the slowest node sets the pace and memory stays at a few
pieces per node whatever the size. A node that answers early (an error) or drops out no longer holds
the others back. HEAD: 200 only when every target has the blob (so the client uploads it otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from corral.app.context import RequestRecord
from corral.app.fanout_progress import error_text
from corral.app.fanout_targets import Audit
from corral.app.fleet import Node
from corral.domain.errors import UpstreamError, UpstreamStatus
from corral.net.client import UpstreamConnection, build_head
from corral.net.response import Headers, Request, Response
from corral.protocol import wire

QUEUE_PIECES = 4
_END = b""


class _Feed:
    """One node's side of the tee."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_PIECES)
        self.stopped = asyncio.Event()  # no longer reading the body: it answered, failed or had it all

    @property
    def taking(self) -> bool:
        return not self.stopped.is_set()

    async def pieces(self) -> AsyncIterator[bytes]:
        while True:
            piece = await self.queue.get()
            if piece is _END:
                return
            yield piece


def _outcome(results: dict[str, tuple[int, str]], verb: str) -> tuple[int, str | None]:
    """(status, error) for the client: success when every node succeeded, the nodes' own answer when
    they all failed alike, else 500 naming the nodes that failed."""
    failed = {n: r for n, r in results.items() if r[0] >= 300}
    if not failed:
        return (201 if any(s == 201 for s, _ in results.values()) else 200), None
    answers = set(failed.values())
    if len(failed) == len(results) and len(answers) == 1:
        status, message = answers.pop()
        return status, message
    detail = "; ".join(f"{n}: {m}" for n, (_, m) in failed.items())
    names = ", ".join(failed)
    return 500, f"the {verb} failed on node{'s' if len(failed) > 1 else ''} {names}: {detail}"


class BlobFanout:
    def __init__(self, connect_s: float, idle_s: float, audit: Audit | None) -> None:
        self.connect_s = connect_s
        self.idle_s = idle_s
        self.audit = audit

    def _audit(self, record: RequestRecord, node: str, digest: str, status: int, error: str) -> None:
        if self.audit is not None:
            detail: dict[str, object] = {"node": node, "digest": digest, "request_id": record.request_id}
            detail.update({"status": "ok"} if status < 300 else {"status": "failed", "error": error})
            self.audit("model.blob", detail)

    async def head(
        self, nodes: list[Node], request: Request, response: Response, record: RequestRecord, headers: Headers
    ) -> None:
        target = request.raw_path.decode("latin-1")

        async def one(node: Node) -> tuple[int, str]:
            pool = node.pool
            try:
                conn = await pool.acquire(self.connect_s)
            except UpstreamError as exc:
                return 502, exc.message
            conn.head_request = True  # the answer has no body, whatever its Content-Length says
            head = build_head("HEAD", (node.settings.base_path + target).encode(), pool.host_header, headers, None)
            try:
                async with asyncio.timeout(self.connect_s + self.idle_s):
                    conn.send(head, b"")
                    upstream = await conn.response()
                    await conn.finished()
            except (UpstreamError, TimeoutError) as exc:
                conn.close()
                return 502, str(exc)
            except BaseException:
                conn.close()
                raise
            conn.release()
            return upstream.status, "" if upstream.status < 300 else f"the node answered {upstream.status}"

        answers = await asyncio.gather(*(one(n) for n in nodes))
        results = dict(zip((n.name for n in nodes), answers, strict=True))
        missing = [n for n, (s, _) in results.items() if s == 404]
        status, _ = _outcome(results, "check")
        if missing:
            status = 404  # some node lacks it: the client must (re)upload, which reaches every node
        record.status = status
        response.send(status, [(b"x-request-id", record.request_id.encode())], b"")

    async def _send(self, feed: _Feed, target: bytes, headers: Headers, length: int | None) -> tuple[int, str]:
        node = feed.node
        pool = node.pool
        conn: UpstreamConnection | None = None
        try:
            conn = await pool.acquire(self.connect_s, fresh=True)
            hdrs = headers if length is not None else [*headers, (b"transfer-encoding", b"chunked")]
            head = build_head("POST", node.settings.base_path.encode() + target, pool.host_header, hdrs, length)
            await conn.send_streaming(head, feed.pieces(), length is None, self.idle_s)
            feed.stopped.set()
            upstream = await conn.response()
            parts: list[bytes] = []
            conn.attach(parts.append)  # the node's answer to a blob is empty or a short error
            conn.watch(self.idle_s, self.idle_s)
            await conn.finished()
        except UpstreamError as exc:
            if conn is not None:
                conn.close()
            return 502, exc.message
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            feed.stopped.set()
        conn.release()
        body = b"".join(parts)
        return upstream.status, "" if upstream.status < 300 else error_text(body, upstream.status)

    async def post(
        self, nodes: list[Node], request: Request, response: Response, record: RequestRecord, headers: Headers
    ) -> None:
        target = request.raw_path + (b"?" + request.query if request.query else b"")
        length = request.content_length if not request.chunked else None
        if length is None and not request.chunked:
            length = 0
        feeds = [_Feed(n) for n in nodes]
        senders = [asyncio.create_task(self._send(f, target, headers, length)) for f in feeds]
        try:
            async for piece in request.body_chunks():
                if not piece:
                    continue
                if not await self._offer(feeds, piece):
                    break  # no node takes the body any more: each has answered
            await asyncio.gather(*(self._put(f, _END) for f in feeds))
            answers = await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()
        digest = request.path.rsplit("/", 1)[-1]
        results = {}
        for node, (status, error) in zip(nodes, answers, strict=True):
            results[node.name] = (status, error)
            self._audit(record, node.name, digest, status, error)
        status, message = _outcome(results, "upload")
        own = [(b"x-request-id", record.request_id.encode()), (b"x-corral-nodes", ",".join(results).encode())]
        if message is not None:
            raise UpstreamStatus(message, status, wire.ollama_error(message), [(b"content-type", wire.JSON)], False)
        record.status = status
        response.send(status, own, b"")

    @staticmethod
    async def _put(feed: _Feed, piece: bytes) -> None:
        """Queue `piece` for one node, unless the node stops taking the body while we wait for room."""
        if not feed.taking:
            return
        if not feed.queue.full():
            feed.queue.put_nowait(piece)
            return
        put = asyncio.ensure_future(feed.queue.put(piece))
        stop = asyncio.ensure_future(feed.stopped.wait())
        await asyncio.wait([put, stop], return_when=asyncio.FIRST_COMPLETED)
        put.cancel()
        stop.cancel()

    async def _offer(self, feeds: list[_Feed], piece: bytes) -> bool:
        """Give `piece` to every node still taking the body. False when none is."""
        live = [f for f in feeds if f.taking]
        if not live:
            return False
        await asyncio.gather(*(self._put(f, piece) for f in live))
        return True
