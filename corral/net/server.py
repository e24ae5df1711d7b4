"""A lean HTTP/1.1 server on asyncio protocols and httptools.

Why not an ASGI server: the proxy path's budget (≤0.3 ms added, ≥0.3× nginx's requests/s) leaves no
room for a generic framework; see docs/architecture.md. This server parses with httptools, hands the
application a `Request` with the whole (size-capped) body and a `Response` that either sends a complete
body or streams chunks with real backpressure. A dropped client connection cancels the handler task,
which is how a disconnect reaches the node at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools

from corral.net.response import Request, Response

log = logging.getLogger(__name__)

Handler = Callable[[Request, Response], Awaitable[None]]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ServerLimits:
    __slots__ = ("header_timeout_s", "keepalive_timeout_s", "max_body_bytes", "max_header_bytes")

    def __init__(
        self,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_header_bytes: int = 64 * 1024,
        keepalive_timeout_s: float = 75.0,
        header_timeout_s: float = 30.0,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.keepalive_timeout_s = keepalive_timeout_s
        self.header_timeout_s = header_timeout_s


class _Rejection(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class HttpServerProtocol(asyncio.Protocol):
    """One client connection. Requests on it are served one after another (pipelined ones wait)."""

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        connections: set[HttpServerProtocol],
        finished: asyncio.Event | None = None,
    ) -> None:
        self._handler = handler
        self._finished = finished
        self._limits = limits
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] = ("", 0)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._rejection: _Rejection | None = None
        self._pending: list[Request] = []
        self._task: asyncio.Task[None] | None = None
        self._current: Response | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_active = self._loop.time()
        self.closed = False
        self.closing = False
        self.tls = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._client = (str(peer[0]), int(peer[1]))
        self.tls = transport.get_extra_info("sslcontext") is not None
        self._connections.add(self)
        self._arm_idle(self._limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._connections.discard(self)
        if self._finished is not None:
            self._finished.set()
        self._can_write.set()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._current is not None:
            self._current.client_gone = True
            self._current.writable()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._last_active = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject_now(400, "protocol upgrade is not supported")
        except httptools.HttpParserError as exc:
            self._reject_now(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()
        if self._current is not None:
            self._current.writable()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_len = 0
        self._rejection = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self._limits.max_header_bytes:
            raise httptools.HttpParserError("request headers too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._parser.should_upgrade():
            return
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue":
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.write(_CONTINUE)
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self._limits.max_body_bytes:
                    self._rejection = _Rejection(
                        413, f"request body is {declared} bytes; the limit is {self._limits.max_body_bytes}"
                    )

    def on_body(self, body: bytes) -> None:
        if self._rejection is not None:
            return
        self._body_len += len(body)
        if self._body_len > self._limits.max_body_bytes:
            self._rejection = _Rejection(413, f"request body exceeds the limit of {self._limits.max_body_bytes} bytes")
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        raw_path = parsed.path or b"/"
        request = Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            raw_path=raw_path,
            query=parsed.query or b"",
            headers=self._headers,
            body=b"".join(self._body) if len(self._body) != 1 else self._body[0],
            client=self._client,
            keep_alive=self._parser.should_keep_alive(),
            http_version=self._parser.get_http_version(),
        )
        if self._rejection is not None:
            request.rejection = (self._rejection.status, self._rejection.message)
            request.keep_alive = False
        self._body = []
        if self._task is None:
            self._start(request)
        else:
            self._pending.append(request)
            if self._transport is not None and len(self._pending) > 16:
                self._transport.pause_reading()

    # serving

    def _start(self, request: Request) -> None:
        assert self._transport is not None
        response = Response(self._transport, self._can_write, request)
        if self.closing:
            response.keep_alive = False
        self._current = response
        self._task = self._loop.create_task(self._run(request, response))

    async def _run(self, request: Request, response: Response) -> None:
        try:
            await self._handler(request, response)
        except asyncio.CancelledError:
            response.client_gone = True
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            if not response.started:
                response.send_simple(500, b'{"error":"internal error"}')
            else:
                response.abort()
        finally:
            self._finish(request, response)

    def _finish(self, request: Request, response: Response) -> None:
        self._task = None
        self._current = None
        if self._finished is not None:
            self._finished.set()
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            return
        if not response.finished:
            # The handler returned without completing the response; the connection can't be reused.
            transport.close()
            return
        if not (request.keep_alive and response.keep_alive) or self.closing:
            transport.close()
            return
        if self._pending:
            nxt = self._pending.pop(0)
            transport.resume_reading()
            self._start(nxt)
        else:
            self._last_active = self._loop.time()

    def _arm_idle(self, seconds: float) -> None:
        if seconds > 0:
            self._idle_timer = self._loop.call_later(seconds, self._idle_expired)

    def _idle_expired(self) -> None:
        # One timer per connection, re-armed lazily: a busy keep-alive connection costs no timer churn.
        self._idle_timer = None
        if self.closed or self._transport is None:
            return
        limit = self._limits.keepalive_timeout_s
        if self._task is not None:
            self._arm_idle(limit)
            return
        quiet = self._loop.time() - self._last_active
        if quiet >= limit:
            self._transport.close()
        else:
            self._arm_idle(limit - quiet)

    def _reject_now(self, status: int, message: str) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if self._task is None:
            body = ('{"error":"' + message.replace('"', "'") + '"}').encode()
            self._transport.write(
                b"HTTP/1.1 %d Bad Request\r\ncontent-type: application/json; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, len(body), body)
            )
        self._transport.close()

    @property
    def busy(self) -> bool:
        return self._task is not None

    def shutdown(self) -> None:
        """From now on every response closes the connection after it; idle ones stay open until drained,
        so a load balancer that reuses its connection still reads `/ready` answering 503."""
        self.closing = True
        if self._current is not None:
            self._current.keep_alive = False


class HttpServer:
    """Listens on one address and serves every connection with `handler`."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self._handler = handler
        self._limits = limits or ServerLimits()
        self.connections: set[HttpServerProtocol] = set()
        self._server: asyncio.Server | None = None
        self.idle = asyncio.Event()  # set whenever a request finishes (drain waits on it)

    async def start(self, host: str, port: int, ssl: Any = None, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpServerProtocol(self._handler, self._limits, self.connections, self.idle),
            host=host,
            port=port,
            ssl=ssl,
            backlog=backlog,
            reuse_address=True,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no connection has a request in flight, up to `timeout_s`; then close idle ones.
        True when everything finished in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(conn.busy for conn in self.connections) and loop.time() < deadline:
            self.idle.clear()
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self.idle.wait()
            except TimeoutError:
                break
        finished = not any(conn.busy for conn in self.connections)
        for conn in list(self.connections):
            if not conn.busy and conn._transport is not None:
                conn._transport.close()
        return finished

    def close_all(self) -> None:
        for conn in list(self.connections):
            if conn._transport is not None:
                conn._transport.abort()
