"""A lean HTTP/1.1 server on asyncio protocols and httptools.

Why not an ASGI server: see "The HTTP server: own or uvicorn, measured" in docs/architecture.md. The
handler starts when a request's head is complete and reads the body on demand (request.py), so a
request refused before its body is wanted costs no body bytes. A `Response` sends a complete body or
streams chunks with real backpressure. A dropped client connection cancels the handler task, which is
how a disconnect reaches the node at once.

The edge's limits: the head's size and line count (request_reader.py) and its arrival time, one request
read ahead of the one being served at most, a body buffered at most BODY_HIGH_WATER ahead of its
reader, and the connection caps (limits.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

from corral.net.limits import ConnectionTable, ServerLimits
from corral.net.request import BODY_HIGH_WATER, Request
from corral.net.request_reader import Refusal, RequestReader
from corral.net.response import Response, status_line
from corral.protocol import wire

__all__ = ["Handler", "HttpServer", "HttpServerProtocol", "ServerLimits"]

log = logging.getLogger(__name__)

Handler = Callable[[Request, Response], Awaitable[None]]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_S = 2.0  # after answering a request whose body was not read, drain the socket this long at most


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
        self._table = table
        self._idle_since = table.idle_since  # this connection is in it while no request is being served
        self.body_timeout_s = limits.body_timeout_s
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] = ("", 0)
        self.peer_ip = ""
        self._reader: RequestReader | None = None
        self._after: Refusal | None = None  # to answer once the response in progress is done
        self._pending: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._response: Response | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._paused = False
        self._stopped = False  # nothing more is parsed on this connection
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
        self._reader = RequestReader(self, self._limits, self._client, self._last_active)
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
        reader = self._reader
        if self._stopped or reader is None:
            return  # lingering, or after a refusal: discarded
        self._last_active = now = self._loop.time()
        try:
            if not reader.feed(data, now):
                self._stopped = True  # an Upgrade served as a plain request; closed after it
        except Refusal as refusal:
            self._refuse(refusal)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()
        if self._response is not None:
            self._response.writable()

    # the reader's calls

    def request_ready(self, request: Request) -> None:
        if self._task is None:
            self._start(request)
        else:
            self._pending.append(request)
            self.pause()  # read no further ahead than this one request

    # reading control (the request's body calls these)

    def send_continue(self) -> None:
        transport = self._transport
        response = self._response
        if transport is not None and not transport.is_closing() and response is not None and not response.started:
            transport.write(_CONTINUE)

    def body_drained(self) -> None:
        self._resume()

    def pause(self) -> None:
        transport = self._transport
        if not self._paused and transport is not None and not transport.is_closing():
            self._paused = True
            transport.pause_reading()

    def _resume(self) -> None:
        if not self._paused or self._pending or self.closed:
            return
        receiving = self._reader.receiving if self._reader is not None else None
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

    def _refuse(self, refusal: Refusal) -> None:
        """Stop parsing; answer the refusal now, or after the response in progress."""
        self._stopped = True
        if self._task is None:
            self._answer(refusal)
        else:
            self._after = refusal
            self.pause()

    def _answer(self, refusal: Refusal) -> None:
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
        reader = self._reader
        if self.closed or transport is None or reader is None or self._stopped:
            return
        now = self._loop.time()
        limits = self._limits
        if reader.head_since is not None:
            left = reader.head_since + limits.header_timeout_s - now
            if left <= 0:
                if reader.head_began:
                    self._refuse(Refusal(408, "the request head did not arrive in time"))
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

    async def start(
        self, host: str, port: int, ssl: Any = None, backlog: int = 2048, sock: socket.socket | None = None
    ) -> None:
        """Listen on host:port, or on `sock`, a socket already bound (a worker's, from its parent)."""
        loop = asyncio.get_running_loop()

        def protocol() -> HttpServerProtocol:
            return HttpServerProtocol(self._handler, self._limits, self.table, self.idle)

        if sock is not None:
            self._server = await loop.create_server(protocol, sock=sock, ssl=ssl, backlog=backlog)
            return
        self._server = await loop.create_server(
            protocol, host=host, port=port, ssl=ssl, backlog=backlog, reuse_address=True
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

    async def drain(self, timeout_s: float, close_idle: bool = True) -> bool:
        """Wait until no connection has a request in flight, up to `timeout_s`; then close idle ones
        (unless told not to). True when everything finished in time."""
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
        if not close_idle:
            return finished
        for conn in list(self.connections):
            if not conn.busy and conn._transport is not None:
                conn._transport.close()
        return finished

    def close_all(self) -> None:
        for conn in list(self.connections):
            if conn._transport is not None:
                conn._transport.abort()
