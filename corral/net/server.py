"""A lean HTTP/1.1 server on asyncio protocols and httptools.

Why not an ASGI server: see "The HTTP server: own or uvicorn, measured" in docs/architecture.md. The
handler starts when a request's head is complete and reads the body on demand (request.py), so a
request refused before its body is wanted costs no body bytes. A `Response` sends a complete body or
streams chunks with real backpressure. A dropped client connection cancels the handler task, which is
how a disconnect reaches the node at once.

The edge's limits live here: the head's size, header count and arrival time; one request read ahead
of the one being served; the connection caps (limits.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools

from corral.net.limits import ConnectionTable, ServerLimits
from corral.net.request import BODY_HIGH_WATER, NO_TOKENS, Request
from corral.net.response import Response, status_line
from corral.protocol import wire

__all__ = ["Handler", "HttpServer", "HttpServerProtocol", "ServerLimits"]

log = logging.getLogger(__name__)

Handler = Callable[[Request, Response], Awaitable[None]]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_S = 2.0  # after answering a request whose body was not read, drain the socket this long at most
# Fixed texts: the parser's own messages name its internals.
_MALFORMED = "malformed HTTP request"
_TOO_LARGE = "request header fields too large"
# Headers that decide the request's framing, noted as they are parsed (Host and Content-Length inline).
_FRAMING = frozenset({b"transfer-encoding", b"expect", b"connection"})


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing; the connection answers `status` and closes."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class HttpServerProtocol(asyncio.Protocol):
    """One client connection. Requests on it are served one after another; at most one waits parsed."""

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        table: ConnectionTable[HttpServerProtocol],
        finished: asyncio.Event | None = None,
    ) -> None:
        self._handler = handler
        self._finished = finished
        self._limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._max_header_count = limits.max_header_count
        self._table = table
        self._idle_since = table.idle_since  # this connection is in it while no request is being served
        self.body_timeout_s = limits.body_timeout_s
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] = ("", 0)
        self.peer_ip = ""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._header_count = 0
        self._hosts = 0
        self._length: int | None = None
        self._chunked = False
        self._expect = False
        self._tokens = NO_TOKENS
        self._in_head = True  # between one message's end and the next one's headers
        self._head_bytes = 0
        self._head_since: float | None = None  # when timing of the head being read began
        self._head_began = False
        self._refusal: _Refusal | None = None
        self._after: _Refusal | None = None  # to answer once the response in progress is done
        self._receiving: Request | None = None  # the request whose body the parser is reading
        self._pending: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._response: Response | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._paused = False
        self._stopped = False  # nothing more is parsed on this connection
        self._upgrade_ignored = False
        self._timer: asyncio.TimerHandle | None = None
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
            self.peer_ip = self._client[0]
        self.tls = transport.get_extra_info("sslcontext") is not None
        if not self._table.admit(self):
            self._stopped = True
            self._transport.close()
            return
        self._head_since = self._loop.time()  # a new connection must send its first head in time
        self._arm(self._limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._table.remove(self)
        if self._finished is not None:
            self._finished.set()
        self._can_write.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._response is not None:
            self._response.client_gone = True
            self._response.writable()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return  # lingering, or after a refusal: discarded
        self._last_active = self._loop.time()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._upgrade_ignored:
                self._stopped = True  # served as a plain request; the connection closes after it
            else:
                self._refuse(self._refusal or _Refusal(400, _MALFORMED))
            return
        except httptools.HttpParserError:
            self._refuse(self._refusal or _Refusal(400, _MALFORMED))
            return
        if self._in_head and self._head_bytes > self._max_header_bytes:
            self._refuse(_Refusal(431, _TOO_LARGE))

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()
        if self._response is not None:
            self._response.writable()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._header_count = 0
        self._hosts = 0
        self._length = None
        self._chunked = self._expect = False
        self._tokens = NO_TOKENS
        self._head_began = True
        if self._head_since is None:
            self._head_since = self._last_active  # when this data arrived

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._max_header_bytes:
            self._refusal = _Refusal(431, _TOO_LARGE)
            raise self._refusal

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailer: never merged into the request's headers
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self._max_header_count or self._header_bytes > self._max_header_bytes:
            self._refusal = _Refusal(431, _TOO_LARGE)
            raise self._refusal
        name = name.lower()
        self._headers.append((name, value))
        if name == b"host":
            self._hosts += 1
        elif name == b"content-length":
            self._length = int(value)  # llhttp has checked it is one decimal number
        elif name in _FRAMING:
            self._framing(name, value)

    def _framing(self, name: bytes, value: bytes) -> None:
        if name == b"transfer-encoding":
            self._chunked = True  # llhttp refuses a request whose last coding is not chunked
        elif name == b"expect":
            self._expect = value.strip().lower() == b"100-continue"
        else:
            self._tokens = self._tokens | {t.strip().lower() for t in value.split(b",") if t.strip()}

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_since = None
        self._head_began = False
        try:
            request = self._request()
        except _Refusal as refusal:
            self._refusal = refusal
            raise
        self._receiving = request
        if self._task is None:
            self._start(request)
        else:
            self._pending.append(request)
            self._pause()  # read no further ahead than this one request

    def on_body(self, body: bytes) -> None:
        request = self._receiving
        if request is not None and request.feed(body):
            self._pause()

    def on_message_complete(self) -> None:
        request, self._receiving = self._receiving, None
        if request is not None:
            request.finish()
        self._in_head = True
        self._head_bytes = 0

    def _request(self) -> Request:
        """The request for the head just parsed, or a _Refusal."""
        parser = self._parser
        method = parser.get_method().decode("ascii", "replace")
        version = parser.get_http_version()
        # Go's net/http (request.go, readRequest): HTTP/1.1 needs exactly one Host header.
        if self._hosts != 1 and version == "1.1":
            raise _Refusal(400, "missing required Host header" if self._hosts == 0 else "too many Host headers")
        keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            if method == "CONNECT":
                raise _Refusal(400, "the CONNECT method is not supported")
            if self._length or self._chunked:
                raise _Refusal(400, "protocol upgrade is not supported")
            # Go ignores an Upgrade it does not handle (curl --http2 sends h2c) and answers in HTTP/1.1;
            # the parser stops after this head, so the connection closes after the answer.
            self._upgrade_ignored = True
            keep_alive = False
        if self._url == b"*":
            raw_path, query = b"*", b""
        else:
            try:
                parsed = httptools.parse_url(self._url)
            except httptools.HttpParserInvalidURLError:
                raise _Refusal(400, _MALFORMED) from None
            raw_path, query = parsed.path or b"/", parsed.query or b""
        return Request(
            method,
            raw_path,
            query,
            self._headers,
            b"",
            self._client,
            keep_alive,
            version,
            self,
            self._length,
            self._chunked,
            self._expect and version != "1.0",
            self._tokens,
        )

    # reading control (the request's body calls these)

    def send_continue(self) -> None:
        transport = self._transport
        response = self._response
        if transport is not None and not transport.is_closing() and response is not None and not response.started:
            transport.write(_CONTINUE)

    def body_drained(self) -> None:
        self._resume()

    def _pause(self) -> None:
        transport = self._transport
        if not self._paused and transport is not None and not transport.is_closing():
            self._paused = True
            transport.pause_reading()

    def _resume(self) -> None:
        if not self._paused or self._pending or self.closed:
            return
        receiving = self._receiving
        if receiving is not None and receiving.buffered > BODY_HIGH_WATER:
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._paused = False
            transport.resume_reading()

    # serving

    def _start(self, request: Request) -> None:
        assert self._transport is not None
        response = Response(self._transport, self._can_write, request)
        if self.closing:
            response.keep_alive = False
        self._response = response
        self._idle_since.pop(self, None)
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
        self._response = None
        if self._finished is not None:
            self._finished.set()
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            return
        if not response.finished:
            transport.close()  # the handler returned without completing the response
        elif not request.body_complete:
            self._linger()  # where the next request starts is unknown
        elif self._after is not None:
            self._answer(self._after)
        elif not (request.keep_alive and response.keep_alive) or self.closing:
            transport.close()
        elif self._pending:
            self._start(self._pending.popleft())
            self._resume()
        else:
            self._last_active = self._loop.time()
            self._idle_since[self] = None
            if self._paused:
                self._resume()

    def _refuse(self, refusal: _Refusal) -> None:
        """Stop parsing; answer the refusal now, or after the response in progress."""
        self._stopped = True
        self._head_since = None
        if self._task is None:
            self._answer(refusal)
        else:
            self._after = refusal
            self._pause()

    def _answer(self, refusal: _Refusal) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        body = wire.ollama_error(refusal.message)
        transport.write(
            status_line(refusal.status)
            + b"content-type: application/json; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
            + body
        )
        self._linger()

    def _linger(self) -> None:
        """Close after the answer, reading and discarding what the client still sends for a moment:
        closing a socket with unread input resets it, and the client could lose the answer."""
        self._stopped = True
        self._pending.clear()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self.tls or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the client reads the answer, then end of stream, and closes its side
        self._paused = False
        transport.resume_reading()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(_LINGER_S, transport.abort)

    # timers: one per connection, re-armed lazily and never further out than header_timeout_s, so a
    # head that begins on an idle connection is always checked in time

    def _arm(self, seconds: float) -> None:
        self._timer = self._loop.call_later(seconds, self._tick)

    def _tick(self) -> None:
        self._timer = None
        transport = self._transport
        if self.closed or transport is None or self._stopped:
            return
        now = self._loop.time()
        limits = self._limits
        if self._head_since is not None:
            left = self._head_since + limits.header_timeout_s - now
            if left <= 0:
                if self._head_began:
                    self._refuse(_Refusal(408, "the request head did not arrive in time"))
                else:
                    transport.close()  # a connection that never sent a byte
                return
        elif self._task is None and not self._pending:
            left = self._last_active + limits.keepalive_timeout_s - now
            if left <= 0:
                transport.close()
                return
            left = min(left, limits.header_timeout_s)
        else:
            left = limits.header_timeout_s
        self._arm(left)

    # the server's view

    def evict(self) -> None:
        """Closed to make room for a new connection (it was idle)."""
        self._stopped = True
        if self._transport is not None:
            self._transport.close()

    @property
    def busy(self) -> bool:
        return self._task is not None

    def shutdown(self) -> None:
        """From now on every response closes the connection after it; idle ones stay open until drained,
        so a load balancer that reuses its connection still reads `/ready` answering 503."""
        self.closing = True
        if self._response is not None:
            self._response.keep_alive = False


class HttpServer:
    """Listens on one address and serves every connection with `handler`."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self._handler = handler
        self._limits = limits or ServerLimits()
        self.table: ConnectionTable[HttpServerProtocol] = ConnectionTable(
            self._limits.max_connections, self._limits.max_connections_per_client
        )
        self.connections = self.table.open
        self._server: asyncio.Server | None = None
        self.idle = asyncio.Event()  # set whenever a request finishes (drain waits on it)

    async def start(self, host: str, port: int, ssl: Any = None, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpServerProtocol(self._handler, self._limits, self.table, self.idle),
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
