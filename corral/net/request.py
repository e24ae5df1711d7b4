"""The request the lean server hands to the application, with its body read on demand.

The handler starts as soon as the request head is complete. The body stays on the socket until the
application asks for it (`read_body` for a whole, capped body; `body_chunks` to stream it on), so a
request refused by auth, limits or its declared size is answered without reading its body, and
`100 Continue` is sent only when the body is wanted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import unquote

from corral.domain.errors import BodyTooLarge, RequestTimeout

Headers = list[tuple[bytes, bytes]]

# Above this many buffered body bytes the connection stops reading until the application catches up.
BODY_HIGH_WATER = 256 * 1024

NO_TOKENS: frozenset[bytes] = frozenset()


class BodyFlow(Protocol):
    """What a request's body needs from its connection."""

    body_timeout_s: float

    def send_continue(self) -> None: ...

    def body_drained(self) -> None: ...


class Request:
    """One request. Header names are lower-case bytes. `body` is b"" until the body has been read."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_complete",
        "_flow",
        "_waiter",
        "body",
        "body_read",
        "chunked",
        "client",
        "connection_tokens",
        "content_length",
        "ctx",
        "expects_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "query",
        "raw_path",
    )

    def __init__(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: Headers,
        body: bytes,
        client: tuple[str, int],
        keep_alive: bool = True,
        http_version: str = "1.1",
        flow: BodyFlow | None = None,
        content_length: int | None = None,
        chunked: bool = False,
        expects_continue: bool = False,
        connection_tokens: frozenset[bytes] = NO_TOKENS,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.client = client
        self.keep_alive = keep_alive
        self.http_version = http_version
        self.ctx: dict[str, Any] = {}
        self.content_length = content_length
        self.chunked = chunked
        self.expects_continue = expects_continue
        self.connection_tokens = connection_tokens
        self._flow = flow
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        if flow is None:
            # A request built whole (tests, other servers): its body is all there is.
            self.body = body
            self.body_read = True
            self._complete = True
        else:
            self.body = b""
            self.body_read = False
            # No Content-Length and no chunked encoding: an HTTP/1.1 request has no body (RFC 9112 §6.3).
            self._complete = content_length is None and not chunked

    @property
    def path(self) -> str:
        """The percent-decoded path (for routing; the raw path is what would be forwarded)."""
        return unquote(self.raw_path.decode("latin-1"))

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def body_complete(self) -> bool:
        """Every byte of the body has come off the socket (whether or not the application read it)."""
        return self._complete

    # fed by the connection

    def feed(self, data: bytes) -> bool:
        """A piece of body from the socket. True when the buffer is over the high-water mark."""
        self._chunks.append(data)
        self._buffered += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return self._buffered > BODY_HIGH_WATER

    def finish(self) -> None:
        """The body's last byte has arrived."""
        self._complete = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def buffered(self) -> int:
        return self._buffered

    # read by the application

    async def read_body(self, limit: int) -> bytes:
        """The whole body, at most `limit` bytes; also kept in `self.body`.

        A declared Content-Length over the limit is refused before a byte is read; a chunked body is
        cut at the limit. Both raise BodyTooLarge (413); a client that stops sending for the
        connection's body timeout gets RequestTimeout (408)."""
        if self.body_read:
            return self.body
        if self.content_length is not None and self.content_length > limit:
            raise BodyTooLarge(f"request body is {self.content_length} bytes; the limit is {limit}")
        if self._complete and self._buffered <= limit:
            chunks = self._chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._chunks = []
            self._buffered = 0
        else:
            parts: list[bytes] = []
            size = 0
            async for piece in self.body_chunks():
                size += len(piece)
                if size > limit:
                    raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
                parts.append(piece)
            body = b"".join(parts)
        self.body = body
        self.body_read = True
        return body

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, for streaming it on. The connection reads more only while less than
        BODY_HIGH_WATER bytes wait here, so a slow consumer slows the client instead of filling memory."""
        flow = self._flow
        if flow is None:
            if self.body:
                yield self.body
            return
        if self.expects_continue and not self._complete and not self._buffered:
            flow.send_continue()
        self.expects_continue = False
        while True:
            if self._chunks:
                pieces = self._chunks
                self._chunks = []
                self._buffered = 0
                flow.body_drained()
                for piece in pieces:
                    yield piece
                continue
            if self._complete:
                break
            await self._wait(flow.body_timeout_s)
        self.body_read = True

    async def _wait(self, timeout_s: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            raise RequestTimeout(f"the request body stopped arriving for {timeout_s:g}s") from None
        finally:
            self._waiter = None
