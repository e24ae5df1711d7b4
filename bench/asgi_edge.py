"""Corral's gateway served by uvicorn instead of Corral's own HTTP server: the "buy" side of the
measurement in docs/architecture.md ("The HTTP server: own or uvicorn, measured").

    .venv/bin/python -m bench.asgi_edge --config corral.yaml

uvicorn parses with httptools on uvloop and calls a raw ASGI callable (no framework); the callable
turns the ASGI scope into Corral's `Request`, hands the gateway a `Response` that speaks ASGI, and
everything behind it is unchanged: guards (keys, limits), validation, routing, Corral's pooled
upstream client, metrics and audit. Only the edge differs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import uvicorn
import uvloop

from corral.adapters.migrations import upgrade
from corral.app.build import build
from corral.app.gateway import Gateway
from corral.config import Settings, load_settings
from corral.net.response import Headers, Request, Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_QUEUE_HIGH = 16  # body messages waiting for uvicorn before write_nowait asks the caller to pause


class _NoTransport:
    """Response's own writing is replaced below; nothing reaches a transport."""

    def is_closing(self) -> bool:
        return False


class AsgiResponse(Response):
    """Corral's Response over ASGI `send`. Each message is handed to uvicorn at once (its `send` writes
    to the socket without suspending unless the socket is full), as Corral's own server writes at once;
    while a send is suspended, later messages queue behind it and the queue length is the backpressure.
    """

    __slots__ = ("_asgi_send", "_pump", "_queue", "_start_message")

    def __init__(self, send: Send, request: Request) -> None:
        super().__init__(cast(asyncio.Transport, _NoTransport()), asyncio.Event(), request)
        self._can_write.set()
        self._asgi_send = send
        self._queue: deque[Message] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._start_message: Message | None = None

    def _headers(self, headers: Headers, content_length: int | None) -> list[tuple[bytes, bytes]]:
        out = [*headers, *self.extra_headers]
        if content_length is not None:
            out.append((b"content-length", b"%d" % content_length))
        if not self.keep_alive:
            out.append((b"connection", b"close"))
        return out

    def send(self, status: int, headers: Headers, body: bytes) -> None:
        self.started = True
        self.status = status
        self._emit({"type": "http.response.start", "status": status, "headers": self._headers(headers, len(body))})
        self._emit({"type": "http.response.body", "body": body})
        self.finished = True

    def start(self, status: int, headers: Headers, content_length: int | None = None, hold: bool = False) -> None:
        self.started = True
        self.status = status
        for name, value in headers:
            if name == b"content-type" and value.startswith(b"text/event-stream"):
                self.content_type_sse = True
        self.chunked = content_length is None
        self._start_message = {
            "type": "http.response.start",
            "status": status,
            "headers": self._headers(headers, content_length),
        }
        if not hold:
            self.flush()

    def flush(self) -> None:
        message, self._start_message = self._start_message, None
        if message is not None:
            self._emit(message)

    def _emit(self, message: Message) -> None:
        if self._pump is not None:
            self._queue.append(message)
            if len(self._queue) > _QUEUE_HIGH:
                self._can_write.clear()
            return
        coro = cast(Any, self._asgi_send(message))
        try:
            blocker = coro.send(None)
        except StopIteration:
            return
        except OSError:
            self.client_gone = True
            return
        # uvicorn waits for the socket to drain: finish that send in a task, the queue behind it.
        self._pump = asyncio.get_running_loop().create_task(self._resume(coro, blocker))

    async def _resume(self, coro: Any, blocker: Any) -> None:
        try:
            while True:
                if blocker is None:
                    await asyncio.sleep(0)
                else:
                    await asyncio.wait([blocker])
                try:
                    blocker = coro.send(None)
                except StopIteration:
                    break
            while self._queue:
                await self._asgi_send(self._queue.popleft())
                if not self._can_write.is_set() and len(self._queue) <= _QUEUE_HIGH // 4:
                    self._can_write.set()
                    self.writable()
        except OSError:
            self.client_gone = True
        finally:
            self._pump = None

    def write_nowait(self, data: bytes) -> bool:
        if not data:
            return True
        self.flush()
        self._emit({"type": "http.response.body", "body": data, "more_body": True})
        return self._can_write.is_set()

    def end(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.flush()
        self._emit({"type": "http.response.body", "body": b""})

    def abort(self) -> None:
        self.keep_alive = False
        self.client_gone = True

    async def complete(self) -> None:
        """Send what is still queued (a whole answer, or the rest of a stream)."""
        while self._pump is not None:
            await asyncio.shield(self._pump)
        while self._queue:
            await self._asgi_send(self._queue.popleft())


class AsgiEdge:
    """The raw ASGI callable: one gateway call per HTTP request."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        client = scope.get("client") or ("", 0)
        request = Request(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
            list(scope["headers"]),
            body,
            (str(client[0]), int(client[1])),
            True,
            scope.get("http_version", "1.1"),
        )
        response = AsgiResponse(send, request)
        await self.gateway(request, response)
        await response.complete()
        if response.client_gone and response.started and not response.finished:
            raise ConnectionAbortedError("stream cut")  # uvicorn closes the connection


async def serve(settings: Settings) -> None:
    app = await build(settings)
    if app.store is not None:
        await app.store.migrate()
    if app.audit_engine is not None:
        await upgrade(app.audit_engine)
    await app.discovery.initial(timeout_s=max(settings.health.timeout_s, 1.0) + 1.0)
    for node in app.fleet:
        app.discovery.start(node)
    config = uvicorn.Config(
        AsgiEdge(app.gateway),
        host=settings.server.host,
        port=settings.server.port,
        http="httptools",
        lifespan="off",
        access_log=False,
        server_header=False,  # Corral's own server sends neither
        date_header=False,
        log_level="warning",
        timeout_keep_alive=int(settings.server.keepalive_timeout_s),
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        app.discovery.stop_all()
        if app.limits is not None:
            await app.limits.close()
        if app.audit is not None:
            await app.audit.close()
        if app.store is not None:
            await app.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    uvloop.run(serve(load_settings(args.config)))


if __name__ == "__main__":
    main()
