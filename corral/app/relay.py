"""Relaying a node's answer into a `Downstream` as it arrives: bytes as they are, or translated for
an OpenAI-type node answering a native request. Backpressure pauses the node's socket; after the
first byte, a failure ends the stream with an error frame in its own format."""

from __future__ import annotations

import asyncio
import time
from time import perf_counter

from corral.app.context import ApiFamily, RequestRecord
from corral.app.downstream import Downstream
from corral.app.headers import DROP_RESPONSE
from corral.app.translation import Translation
from corral.domain.errors import UpstreamError, UpstreamMidstream
from corral.net.client import UpstreamConnection, UpstreamResponse
from corral.net.response import Headers
from corral.protocol import wire
from corral.protocol.echo import ModelEcho
from corral.protocol.usage import Framing, UsageMeter
from corral.protocol.wire import SseEnd


class Relay:
    """The node connection's sink: feeds each piece to the usage meter (and the watch for an SSE
    stream's final event) and passes it on to the downstream. The pieces of one read from the node's
    socket leave together, in one write, when the read has been parsed (`flush`): a fast stream's
    chunks often arrive several to a read, and each write to a socket is a system call that also
    wakes the reader. Nothing waits for a later read, so no chunk is held back."""

    __slots__ = ("conn", "downstream", "echo", "end", "first_at", "meter", "pending")

    def __init__(
        self,
        conn: UpstreamConnection,
        downstream: Downstream,
        meter: UsageMeter,
        end: SseEnd | None,
        echo: ModelEcho | None = None,
    ) -> None:
        self.conn = conn
        self.downstream = downstream
        self.meter = meter
        self.end = end
        self.echo = echo
        self.first_at = 0.0
        self.pending: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        if not self.first_at:
            self.first_at = perf_counter()
        self.meter.feed(data)
        if self.end is not None:
            self.end.feed(data)
        if self.echo is not None:
            data = self.echo.feed(data)
            if not data:
                return
        self.pending.append(data)

    def flush(self) -> None:
        write_pieces(self.pending, self.downstream, self.conn)


def write_pieces(pending: list[bytes], downstream: Downstream, conn: UpstreamConnection) -> None:
    """Write what `pending` holds as one piece and empty it; pause the node while the client is full."""
    if not pending:
        return
    data = pending[0] if len(pending) == 1 else b"".join(pending)
    pending.clear()
    if not downstream.write_nowait(data):
        conn.pause()
        downstream.on_writable(conn.resume)


async def read_all(conn: UpstreamConnection, idle_s: float) -> bytes:
    """A (small) whole answer; whatever arrived when the node goes quiet or fails."""
    chunks: list[bytes] = []
    conn.attach(chunks.append)
    try:
        async with asyncio.timeout(idle_s):
            await conn.finished()
    except (TimeoutError, UpstreamError):
        conn.close()
    return b"".join(chunks)


async def relay(
    conn: UpstreamConnection,
    upstream: UpstreamResponse,
    own: Headers,
    downstream: Downstream,
    record: RequestRecord,
    echo: ModelEcho | None = None,
) -> None:
    """Relay the answer's bytes untouched (but for the model's name, with `echo`); the downstream is
    left open (the caller ends it)."""
    headers = [(k, v) for k, v in upstream.headers if k not in DROP_RESPONSE]
    headers += own
    # A renamed answer changes length: it goes out chunked.
    length = None if upstream.chunked or echo is not None else upstream.content_length
    downstream.start(upstream.status, headers, length, hold=True)
    record.status = upstream.status
    meter = UsageMeter(Framing.of(upstream.content_type))
    end = SseEnd(_sse_kind(record)) if upstream.status == 200 and framing(upstream) == "sse" else None
    sink = Relay(conn, downstream, meter, end, echo)
    conn.attach(sink, sink.flush)
    downstream.flush()  # the head, if no body had arrived with it
    try:
        await conn.finished()
        if echo is not None and (rest := echo.flush()):
            downstream.write_nowait(rest)
    finally:
        sink.flush()  # pieces of a read cut short by a failure, ahead of the stream's error frame
        if sink.first_at:
            record.ttft = sink.first_at - record.started
        counts = meter.counts()
        record.prompt_tokens = counts.prompt_tokens
        record.completion_tokens = counts.completion_tokens
        record.tokens_counted = counts.counted
        record.load_s = counts.load_seconds
    if end is not None and not end.seen:
        # The node ended the stream without its final event (Ollama does so when the runner fails
        # mid-stream): end it with an error event the client's library raises on, not silently.
        raise UpstreamMidstream("the node ended the stream before the answer was complete")


def _sse_kind(record: RequestRecord) -> str:
    if record.family is ApiFamily.ANTHROPIC:
        return "anthropic"
    return "responses" if record.route == "/v1/responses" else "chat"


async def relay_translated(
    conn: UpstreamConnection,
    upstream: UpstreamResponse,
    own: Headers,
    downstream: Downstream,
    record: RequestRecord,
    translation: Translation,
    idle_s: float,
) -> None:
    """An OpenAI-type node answering a native request: SSE or JSON in, Ollama's NDJSON or JSON out."""
    if upstream.status != 200:
        body = translation.error_body(upstream.status, await read_all(conn, idle_s))
        record.status = upstream.status
        downstream.send(upstream.status, [(b"content-type", wire.JSON), *own], body)
        return
    if not translation.stream:
        chunks: list[bytes] = []
        conn.attach(chunks.append)
        await conn.finished()
        record.status = 200
        whole = translation.whole(b"".join(chunks), time.time_ns())
        downstream.send(200, [(b"content-type", wire.JSON), *own], whole)
        translation.count(record)
        return
    downstream.start(200, [(b"content-type", wire.NDJSON), *own], hold=True)
    record.status = 200
    stream = translation.streamer()
    pending: list[bytes] = []  # the translated lines of one read, written together (as `Relay` does)

    def sink(data: bytes) -> None:
        out = stream.feed(data, time.time_ns())
        if out:
            if record.ttft is None:
                record.ttft = perf_counter() - record.started
            pending.append(out)

    conn.attach(sink, lambda: write_pieces(pending, downstream, conn))
    downstream.flush()
    try:
        await conn.finished()
    except UpstreamError as exc:
        write_pieces(pending, downstream, conn)
        downstream.write_nowait(stream.error_line(f"node {record.node} failed mid-stream: {exc.message}"))
        downstream.end()
        translation.count(record, stream)
        raise UpstreamMidstream(exc.message) from exc
    downstream.write_nowait(stream.finish(time.time_ns()))
    downstream.end()
    translation.count(record, stream)


def framing(upstream: UpstreamResponse) -> str | None:
    """How a stream is framed, for its error frame: "sse", "ndjson" (any chunked answer), or None."""
    content_type = upstream.content_type or b""
    if content_type.startswith(b"text/event-stream"):
        return "sse"
    return "ndjson" if upstream.chunked else None


def end_broken_stream(downstream: Downstream, record: RequestRecord, exc: UpstreamError, frames: str | None) -> None:
    """After the first byte, a node failure can only end the stream: with an error frame the client's
    library raises on (an NDJSON error line, or an SSE error event), else by closing."""
    message = f"node {record.node} failed mid-stream: {exc.message}"
    record.error_kind = UpstreamMidstream.kind
    record.error = message
    if not downstream.started or downstream.finished:
        return
    if frames == "sse":
        if record.family is ApiFamily.ANTHROPIC:
            event = wire.anthropic_error_event(message)
        elif record.route == "/v1/responses":
            event = wire.responses_error_event(message, UpstreamMidstream.kind.value)
        else:
            event = wire.sse_error_event(message, UpstreamMidstream.kind.value)
        downstream.write_nowait(event)
        downstream.end()
    elif frames == "ndjson":
        downstream.write_nowait(wire.ndjson_error_line(message))
        downstream.end()
    else:
        downstream.abort()
