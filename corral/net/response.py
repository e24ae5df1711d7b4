"""The response object the lean server hands to the application (the request is in request.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from corral.net.request import Headers, Request

_REASONS = {
    100: b"Continue",
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    301: b"Moved Permanently",
    307: b"Temporary Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    499: b"Client Closed Request",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

__all__ = ["Headers", "Request", "Response", "status_line"]


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


class Response:
    """Writes one response: `send` for a whole body, or `start` + `write`* + `end` for a stream.

    A stream with no content length is sent with chunked transfer encoding; each `write` becomes one
    chunk on the wire at once (no buffering). `write` waits while the client's socket is full. An
    HTTP/1.0 client cannot read chunked encoding: its stream is delimited by closing the connection.
    """

    __slots__ = (
        "_can_write",
        "_head_only",
        "_http10",
        "_on_writable",
        "_pending_head",
        "_request",
        "_transport",
        "chunked",
        "client_gone",
        "content_type_sse",
        "extra_headers",
        "finished",
        "keep_alive",
        "started",
        "status",
    )

    def __init__(self, transport: asyncio.Transport, can_write: asyncio.Event, request: Request) -> None:
        self._transport = transport
        self._can_write = can_write
        self._head_only = request.method == "HEAD"
        self._http10 = request.http_version == "1.0"
        self._request = request
        self.chunked = False
        self.content_type_sse = False
        self._on_writable: Callable[[], None] | None = None
        self._pending_head: bytes | None = None
        self.extra_headers: Headers = []
        self.keep_alive = request.keep_alive  # a client that asked to close hears `connection: close`
        self.started = False
        self.finished = False
        self.client_gone = False
        self.status = 0

    def _head(self, status: int, headers: Headers, extra: bytes) -> bytes:
        parts = [status_line(status)]
        for name, value in headers:
            parts.append(name + b": " + value + b"\r\n")
        for name, value in self.extra_headers:
            parts.append(name + b": " + value + b"\r\n")
        if not self._request.body_complete:
            # Answered before the body was read: where the next request would start is unknown.
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(extra)
        parts.append(b"\r\n")
        return b"".join(parts)

    def send(self, status: int, headers: Headers, body: bytes) -> None:
        """A complete response with a content length."""
        self.started = True
        self.status = status
        if status == 204 or status == 304 or status < 200:
            head = self._head(status, headers, b"")
            body = b""
        else:
            head = self._head(status, headers, b"content-length: %d\r\n" % len(body))
        if self._head_only:
            body = b""
        if not self._transport.is_closing():
            self._transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                self._transport.write(body)
        self.finished = True

    def send_simple(self, status: int, body: bytes, content_type: bytes = b"application/json; charset=utf-8") -> None:
        self.send(status, [(b"content-type", content_type)], body)

    def start(self, status: int, headers: Headers, content_length: int | None = None, hold: bool = False) -> None:
        """Begin a response whose body follows through `write`. With `hold`, the head waits for the first
        body piece (or `flush`) so that both leave in one write."""
        self.started = True
        self.status = status
        for name, value in headers:
            if name == b"content-type" and value.startswith(b"text/event-stream"):
                self.content_type_sse = True
        if content_length is None:
            if self._head_only or status == 204 or status == 304:
                extra = b""
            elif self._http10:
                self.keep_alive = False  # the body ends where the connection does
                extra = b""
            else:
                self.chunked = True
                extra = b"transfer-encoding: chunked\r\n"
        else:
            extra = b"content-length: %d\r\n" % content_length
        self._pending_head = self._head(status, headers, extra)
        if not hold:
            self.flush()

    def flush(self) -> None:
        head, self._pending_head = self._pending_head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def write_nowait(self, data: bytes) -> bool:
        """Write a body piece now. Returns False when the client socket is full (caller should pause)."""
        if not data or self._head_only:
            if self._head_only:
                self.flush()
            return True
        if self._transport.is_closing():
            self.client_gone = True
            return True
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            data = head + data
        self._transport.write(data)
        return self._can_write.is_set()

    async def write(self, data: bytes) -> None:
        if not self.write_nowait(data):
            await self._can_write.wait()

    def on_writable(self, callback: Callable[[], None]) -> None:
        """Call `callback` once when the client socket drains (the server's resume_writing)."""
        self._on_writable = callback

    def writable(self) -> None:
        callback, self._on_writable = self._on_writable, None
        if callback is not None:
            callback()

    def end(self) -> None:
        if self.finished:
            return
        self.finished = True
        tail = b"0\r\n\r\n" if self.chunked and not self._head_only else b""
        head, self._pending_head = self._pending_head, None
        if head is not None:
            tail = head + tail
        if tail and not self._transport.is_closing():
            self._transport.write(tail)

    def abort(self) -> None:
        """Drop the connection: the only honest end for a response that cannot be completed."""
        self.keep_alive = False
        self._transport.abort()
