"""Turns one connection's bytes into `Request`s with httptools, enforcing the request head's limits.

A request is handed over as soon as its head is complete; its body follows into the request as it is
parsed. The head is refused (`Refusal`) when it has too many lines or bytes, is malformed, lacks the
one Host line HTTP/1.1 needs, or asks for CONNECT. Chunked trailers are never merged into the headers.
"""

from __future__ import annotations

from typing import Protocol

import httptools

from corral.net.limits import ServerLimits
from corral.net.request import NO_TOKENS, BodyFlow, Request

# Fixed texts: the parser's own messages name its internals.
MALFORMED = "malformed HTTP request"
TOO_LARGE = "request header fields too large"
# Rarer headers that decide the request's framing (Host and Content-Length are checked inline).
_FRAMING = frozenset({b"transfer-encoding", b"expect", b"connection"})


class Refusal(Exception):
    """A request the connection answers with `status` and then closes."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class ReaderOwner(BodyFlow, Protocol):
    """The connection a reader works for."""

    def request_ready(self, request: Request) -> None: ...

    def pause(self) -> None: ...


class RequestReader:
    """The httptools callback target for one connection."""

    def __init__(self, owner: ReaderOwner, limits: ServerLimits, client: tuple[str, int], now: float) -> None:
        self._owner = owner
        self._client = client
        self._max_bytes = limits.max_header_bytes
        self._max_count = limits.max_header_count
        self._parser = httptools.HttpRequestParser(self)
        self._now = now
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._header_count = 0
        self._hosts = 0
        self._length: int | None = None
        self._chunked = False
        self._expect = False
        self._tokens = NO_TOKENS
        self._refusal: Refusal | None = None
        self._upgrade_ignored = False
        self.in_head = True  # from one message's end to the next one's complete head
        self.head_bytes = 0
        self.head_since: float | None = now  # a new connection's first head is timed from its start
        self.head_began = False  # a byte of the head being timed has arrived
        self.receiving: Request | None = None  # the request whose body is being parsed

    def feed(self, data: bytes, now: float) -> bool:
        """Parse `data`. False when parsing has ended for good (an Upgrade served as a plain request:
        what follows its head is not HTTP/1.1). Raises Refusal."""
        self._now = now
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._upgrade_ignored:
                return False
            raise self._refusal or Refusal(400, MALFORMED) from None
        except httptools.HttpParserError:
            raise self._refusal or Refusal(400, MALFORMED) from None
        if self.in_head and self.head_bytes > self._max_bytes:
            raise Refusal(431, TOO_LARGE)  # a head line that never ends is cut here
        return True

    def _refuse(self, status: int, message: str) -> Refusal:
        self._refusal = Refusal(status, message)
        return self._refusal

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
        self.head_began = True
        if self.head_since is None:
            self.head_since = self._now

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._max_bytes:
            raise self._refuse(431, TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a chunked body's trailer: never merged into the request's headers
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self._max_count or self._header_bytes > self._max_bytes:
            raise self._refuse(431, TOO_LARGE)
        name = name.lower()
        self._headers.append((name, value))
        if name == b"host":
            self._hosts += 1
        elif name == b"content-length":
            self._length = int(value)  # llhttp has checked it is one decimal number
        elif name in _FRAMING:
            if name == b"transfer-encoding":
                self._chunked = True  # llhttp refuses a request whose last coding is not chunked
            elif name == b"expect":
                self._expect = value.strip().lower() == b"100-continue"
            else:
                self._tokens = self._tokens | {t.strip().lower() for t in value.split(b",") if t.strip()}

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_since = None
        self.head_began = False
        self.head_bytes = 0
        parser = self._parser
        method = parser.get_method().decode("ascii", "replace")
        version = parser.get_http_version()
        # Go's net/http (request.go, readRequest): HTTP/1.1 needs exactly one Host header.
        if self._hosts != 1 and version == "1.1":
            raise self._refuse(400, "missing required Host header" if self._hosts == 0 else "too many Host headers")
        keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            if method == "CONNECT":
                raise self._refuse(400, "the CONNECT method is not supported")
            if self._length or self._chunked:
                raise self._refuse(400, "protocol upgrade is not supported")
            # Go ignores an Upgrade it does not handle (curl --http2 asks for h2c) and answers in
            # HTTP/1.1; the parser stops after this head, so the connection closes after the answer.
            self._upgrade_ignored = True
            keep_alive = False
        if self._url == b"*":
            raw_path, query = b"*", b""
        else:
            try:
                parsed = httptools.parse_url(self._url)
            except httptools.HttpParserInvalidURLError:
                raise self._refuse(400, MALFORMED) from None
            raw_path, query = parsed.path or b"/", parsed.query or b""
        request = Request(
            method,
            raw_path,
            query,
            self._headers,
            b"",
            self._client,
            keep_alive,
            version,
            self._owner,
            self._length,
            self._chunked,
            self._expect and version != "1.0",  # HTTP/1.0 clients never wait for 100 Continue
            self._tokens,
        )
        self.receiving = request
        self._owner.request_ready(request)

    def on_body(self, body: bytes) -> None:
        request = self.receiving
        if request is not None and request.feed(body):
            self._owner.pause()

    def on_message_complete(self) -> None:
        request, self.receiving = self.receiving, None
        if request is not None:
            request.finish()
        self.in_head = True
