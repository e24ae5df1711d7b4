"""A lean pooled HTTP/1.1 client for talking to nodes, on asyncio protocols and httptools.

One `ConnectionPool` per node keeps idle keep-alive connections. A response's body is delivered to a
synchronous sink as the bytes arrive (the proxy writes them straight to the client socket), so a
relayed stream is never buffered. A sink may also take a `flush` callback, called once after each read
from the node's socket has been parsed: the pieces of one read (several chunks of a fast stream) can
then leave in one write instead of one each, without waiting for anything that has not arrived yet.
The caller applies backpressure with `pause()`/`resume()`.
A request body can also be streamed to the node (`send_streaming`) at constant memory: the next piece
is pulled only once the node's socket has taken the previous one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httptools

from corral.domain.errors import UpstreamConnect, UpstreamProtocol, UpstreamTimeout

Headers = list[tuple[bytes, bytes]]
Sink = Callable[[bytes], None]
Flush = Callable[[], None]


class UpstreamResponse:
    """Status and headers of a node's answer; the body arrives through `attach(sink)`."""

    __slots__ = ("chunked", "content_length", "content_type", "headers", "status")

    def __init__(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        self.content_length: int | None = None
        self.chunked = False
        self.content_type: bytes | None = None  # the first, as `header(b"content-type")` gives it
        for name, value in headers:
            if name == b"content-type":
                if self.content_type is None:
                    self.content_type = value
            elif name == b"content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    self.content_length = None
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class UpstreamConnection(asyncio.Protocol):
    """One connection to a node; serves one exchange at a time."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = []
        self._response: asyncio.Future[UpstreamResponse] | None = None
        self._done: asyncio.Future[None] | None = None
        self._sink: Sink | None = None
        self._flush: Flush | None = None
        self._early: list[bytes] = []
        self._keep_alive = False
        self.closed = False
        self.reused = False
        self.last_activity = 0.0
        self.head_request = False
        self.paused = False
        self._timer: asyncio.TimerHandle | None = None
        # The response head's deadline (`send`'s first_byte_s), checked by a timer of its own that is
        # re-armed lazily: an answer that comes in time leaves the timer armed for the connection's
        # next exchange instead of cancelling it, so a request costs no timer (one per connection).
        self._head_by: float | None = None
        self._head_s = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_timer_at = 0.0
        self._idle_s = 0.0
        self._deadline = 0.0
        self._writable: asyncio.Future[None] | None = None  # pending while the node's socket is full
        self._body_unsent = False  # a streamed body was cut short: the connection cannot be reused

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.resume_writing()
        self._stop_timers()
        self._pool.forget(self)
        if self._response is not None and not self._response.done():
            _fail_quietly(self._response, UpstreamConnect(f"node {self._pool.name} closed the connection"))
        if self._done is not None and not self._done.done():
            head = (
                self._response.result()
                if self._response is not None
                and self._response.done()
                and not self._response.cancelled()
                and self._response.exception() is None
                else None
            )
            if head is not None and not head.chunked and head.content_length is None:
                self._done.set_result(None)  # a body delimited by the connection's end
            else:
                err = UpstreamProtocol(f"node {self._pool.name} closed the connection mid-response")
                _fail_quietly(self._done, err)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            err = UpstreamProtocol(f"node {self._pool.name} sent a malformed response: {exc}")
            self._fail(err)
        finally:
            # Everything this read held has reached the sink: it may write it out now, in one piece.
            if self._flush is not None:
                self._flush()

    def watch(self, idle_s: float, total_s: float) -> None:
        """Fail the body with UpstreamTimeout after `idle_s` of silence (while the client keeps up) or
        `total_s` in all. Timers are re-armed lazily, so a busy stream costs no timer churn."""
        if self._done is None or self._done.done():
            return  # the whole answer is already here (a small body arrives with its head)
        now = self._loop.time()
        self._idle_s = idle_s
        self._deadline = now + total_s
        self.last_activity = now
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(min(idle_s, total_s), self._check)

    def _check(self) -> None:
        self._timer = None
        if self._done is None or self._done.done():
            return
        now = self._loop.time()
        if now >= self._deadline:
            self._fail(UpstreamTimeout(f"the exchange with node {self._pool.name} took too long"))
            return
        if self.paused:
            self.last_activity = now
        silent = now - self.last_activity
        if silent >= self._idle_s:
            self._fail(UpstreamTimeout(f"node {self._pool.name} sent nothing for {self._idle_s:g}s"))
            return
        wait = min(self._idle_s - silent, self._deadline - now)
        self._timer = self._loop.call_later(wait, self._check)

    def _fail(self, err: Exception) -> None:
        if self._response is not None and not self._response.done():
            _fail_quietly(self._response, err)
        if self._done is not None and not self._done.done():
            _fail_quietly(self._done, err)
        self.close()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def _expect_head(self, first_byte_s: float) -> None:
        """The response head must come within `first_byte_s`: the head timer is armed only when none
        is, or when it would fire after this deadline; otherwise it re-arms itself when it fires."""
        deadline = self._loop.time() + first_byte_s
        self._head_by = deadline
        self._head_s = first_byte_s
        timer = self._head_timer
        if timer is None or self._head_timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._head_timer = self._loop.call_at(deadline, self._check_head)
            self._head_timer_at = deadline

    def _check_head(self) -> None:
        self._head_timer = None
        deadline = self._head_by
        if deadline is None or self.closed:
            return  # the head came (or the connection is gone): nothing to watch until the next send
        if self._loop.time() < deadline:  # a later exchange on this connection: its own deadline
            self._head_timer = self._loop.call_at(deadline, self._check_head)
            self._head_timer_at = deadline
            return
        self._head_by = None
        self._fail(UpstreamTimeout(f"node {self._pool.name} sent no response within {self._head_s:g}s"))

    def on_headers_complete(self) -> None:
        self._head_by = None
        resp = UpstreamResponse(self._parser.get_status_code(), self._headers)
        self._keep_alive = self._parser.should_keep_alive()
        if self._response is not None and not self._response.done():
            self._response.set_result(resp)
        if self.head_request and self._done is not None and not self._done.done():
            # A response to HEAD has no body, whatever its headers say; don't reuse the parser state.
            self._keep_alive = False
            self._done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink(body)
        else:
            self._early.append(body)

    def on_message_complete(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # exchange

    def _begin(self) -> None:
        self._headers = []
        self._sink = None
        self._flush = None
        self._early = []
        self._body_unsent = False
        self._response = self._loop.create_future()
        self._done = self._loop.create_future()

    def send(self, head: bytes, body: bytes, first_byte_s: float | None = None) -> None:
        """Write the request. With `first_byte_s`, the response head must arrive within it."""
        assert self._transport is not None
        self._begin()
        if first_byte_s is not None:
            self._expect_head(first_byte_s)
        if body and len(body) < 65536:
            self._transport.write(head + body)
        else:
            self._transport.write(head)
            if body:
                self._transport.write(body)

    async def send_streaming(
        self, head: bytes, chunks: AsyncIterator[bytes], chunked: bool, first_byte_s: float | None = None
    ) -> None:
        """Write the request head, then the body as `chunks` yields it, framed as chunked encoding when
        `chunked` (the head must say so, or carry the Content-Length). Each piece waits for the node's
        socket to drain first, so memory stays flat whatever the size. The node may answer before the
        body is all sent (an error): sending stops there, and the connection is not reused.
        `first_byte_s` counts from the body's end."""
        transport = self._transport
        assert transport is not None
        self._begin()
        response = self._response
        assert response is not None
        transport.write(head)
        async for piece in chunks:
            if response.done() or self.closed:
                self._body_unsent = True
                return
            if not piece:
                continue
            transport.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if self._writable is not None:
                await self._writable
        if chunked and not self.closed:
            transport.write(b"0\r\n\r\n")
        if first_byte_s is not None and not response.done() and not self.closed:
            self._expect_head(first_byte_s)

    def response(self) -> asyncio.Future[UpstreamResponse]:
        """The response head, to await (the future itself: no coroutine per exchange)."""
        assert self._response is not None
        return self._response

    def attach(self, sink: Sink, flush: Flush | None = None) -> None:
        """Deliver the body (what has arrived already, then the rest as it comes) to `sink`; with
        `flush`, call it after what has arrived already and then after each read's pieces."""
        self._sink = sink
        self._flush = flush
        early, self._early = self._early, []
        for piece in early:
            sink(piece)
        if flush is not None:
            flush()

    def finished(self) -> asyncio.Future[None]:
        """The end of the response body, to await (the future itself, as `response`)."""
        assert self._done is not None
        return self._done

    def pause(self) -> None:
        if self._transport is not None and not self.closed and not self.paused:
            self.paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and not self.closed and self.paused:
            self.paused = False
            self._transport.resume_reading()

    def _stop_timers(self) -> None:
        self._head_by = None
        for timer in (self._timer, self._head_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._head_timer = None

    def release(self) -> None:
        """Return the connection to its pool if the exchange ended cleanly, else close it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        done = self._done
        clean = done is not None and done.done() and not done.cancelled() and done.exception() is None
        if clean and self._keep_alive and not self.closed and not self._body_unsent:
            self._sink = None
            self._flush = None
            self._pool.give_back(self)
            return
        self.close()

    def close(self) -> None:
        self.closed = True
        self._stop_timers()
        if self._transport is not None:
            self._transport.abort()


class ConnectionPool:
    """Idle keep-alive connections to one node (`host:port`)."""

    def __init__(self, name: str, host: str, port: int, *, max_idle: int = 64, ssl: bool = False) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.ssl = ssl
        self.max_idle = max_idle
        self._idle: deque[UpstreamConnection] = deque()
        self.host_header = host.encode() if port in (80, 443) else f"{host}:{port}".encode()

    async def acquire(self, connect_timeout_s: float, fresh: bool = False) -> UpstreamConnection:
        """A connection to the node: an idle one, or with `fresh` (or none idle) a new one. A request
        that cannot be sent twice (a streamed body) takes a fresh one: an idle connection may be one
        the node has just closed."""
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, proto = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl or None
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to node {self.name} timed out") from exc
        except OSError as exc:
            raise UpstreamConnect(f"cannot connect to node {self.name}: {exc.strerror or exc}") from exc
        return proto

    def give_back(self, conn: UpstreamConnection) -> None:
        if len(self._idle) < self.max_idle:
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def build_head(method: str, target: bytes, host: bytes, headers: Headers, body_len: int | None) -> bytes:
    """Request line and headers for a node. `headers` must already exclude hop-by-hop ones and Host."""
    parts = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if body_len is not None:
        parts.append(b"content-length: %d\r\n" % body_len)
    parts.append(b"\r\n")
    return b"".join(parts)


def _fail_quietly(future: asyncio.Future[Any], err: Exception) -> None:
    """Fail `future` for whoever awaits it, without asyncio's "exception was never retrieved" log when
    nobody does (the proxy gives up on a connection, e.g. when its client left, before its end)."""
    future.set_exception(err)
    future.exception()  # marks it retrieved; an awaiting caller still gets the exception
