"""One keep-alive HTTP/1.1 connection of the load generator, on an asyncio protocol and httptools.

It is driven by callbacks, not awaited: the driver writes a pre-encoded request with `send`, the
parser's callbacks collect the answer (a streamed one through a frame reader, timed per read), and the
end of the message calls the driver back, which records it and writes the next request at once. No
coroutine, future or task exists per request, which is what lets one Python process drive thousands
of requests per second. (The gateway's own client in corral/net awaits two futures per exchange and
reports failures as a proxy would; the load generator needs neither.)
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, cast

import httptools

from corral.loadtest.frames import StreamReader

if TYPE_CHECKING:
    from corral.loadtest.driver import Driver


class Conn(asyncio.Protocol):
    """The driver reads the exchange's state from these fields when it ends."""

    def __init__(self, driver: Driver, first: tuple[bytes, float] | None = None) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.first = first  # the request to send as soon as the connection is up
        self.busy = False
        self.closed = False
        self.scheduled = 0.0  # when the request was due (latency counts from here)
        self.sent = 0.0
        self.now = 0.0  # clock reading for the bytes being parsed
        self.head_at = 0.0
        self.status = 0
        self.reader: StreamReader | None = None
        self.body: list[bytes] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        first, self.first = self.first, None
        if self.driver.aborted:
            self.close()  # connected after Ctrl-C: nothing to send
            return
        self.driver.conns.add(self)
        if first is not None:
            self.send(*first)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.driver.conns.discard(self)
        if self.busy:
            self.busy = False
            reason = f": {exc}" if exc else ""
            self.driver.broken(self, "closed", f"the server closed the connection mid-answer{reason}")
        self.driver.lost(self)

    def data_received(self, data: bytes) -> None:
        self.now = perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.busy:
                self.busy = False
                self.driver.broken(self, "protocol", f"a malformed response: {exc}")
            self.close()

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_at = self.now
        if self.status == 200:
            self.reader = self.driver.new_reader()

    def on_body(self, body: bytes) -> None:
        if self.reader is not None:
            self.reader.feed(body, self.now)
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.busy:
            return  # an answer nobody waits for (after a timeout)
        self.busy = False
        self.driver.answered(self, self.parser.should_keep_alive())

    # the exchange

    def send(self, request: bytes, scheduled: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.scheduled = scheduled
        self.status = 0
        self.reader = None
        self.body = []
        self.sent = perf_counter()
        self.transport.write(request)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()
