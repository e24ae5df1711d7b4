"""Where an answer goes. The relay writes to a `Downstream`; the client socket (`net.Response`) is one,
and the others plug in here:

- `Collector` keeps a whole answer in memory (a batch job's result, one node's part of a fan-out);
- `Tee` passes an answer on to another downstream and records it (a response cache fills from it);
- `Recorded` is a finished answer that can be played into any downstream (a cache hit answered by a
  guard, a merged fan-out result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Headers = list[tuple[bytes, bytes]]


class Downstream(Protocol):
    """One answer's consumer. `start` + `write_nowait`* + `end`, or `send` for a whole answer.
    `write_nowait` returns False when the consumer is full: the producer pauses until `on_writable`."""

    @property
    def started(self) -> bool: ...

    @property
    def finished(self) -> bool: ...

    def send(self, status: int, headers: Headers, body: bytes) -> None: ...

    def start(self, status: int, headers: Headers, content_length: int | None = None, hold: bool = False) -> None: ...

    def flush(self) -> None: ...

    def write_nowait(self, data: bytes) -> bool: ...

    def on_writable(self, callback: Callable[[], None]) -> None: ...

    def end(self) -> None: ...

    def abort(self) -> None: ...


@dataclass
class Recorded:
    """A finished answer: status, headers and the body as the pieces it arrived in."""

    status: int
    headers: Headers
    chunks: list[bytes] = field(default_factory=list)
    streamed: bool = False  # sent as a stream (chunked), so replayed as one

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)

    def play(self, into: Downstream) -> None:
        """Write the answer into `into`, a stream as a stream (the pieces as they came)."""
        if not self.streamed:
            into.send(self.status, self.headers, self.body)
            return
        into.start(self.status, self.headers, hold=True)
        for chunk in self.chunks:
            into.write_nowait(chunk)
        into.end()


class Collector:
    """A downstream that keeps the whole answer in memory; never full. `aborted` marks a broken one."""

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.aborted = False
        self.answer: Recorded | None = None

    def send(self, status: int, headers: Headers, body: bytes) -> None:
        self.started = self.finished = True
        self.answer = Recorded(status, list(headers), [body] if body else [])

    def start(self, status: int, headers: Headers, content_length: int | None = None, hold: bool = False) -> None:
        self.started = True
        self.answer = Recorded(status, list(headers), streamed=content_length is None)

    def flush(self) -> None:
        return None

    def write_nowait(self, data: bytes) -> bool:
        if self.answer is not None and data:
            self.answer.chunks.append(data)
        return True

    def on_writable(self, callback: Callable[[], None]) -> None:
        callback()

    def end(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True
        self.finished = True


class Tee:
    """Passes everything to `inner` (with its backpressure) and records a copy, up to `max_bytes`;
    `recording()` is the answer when it completed whole and within the cap, else None."""

    def __init__(self, inner: Downstream, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self._copy = Collector()
        self._size = 0
        self._over = False

    @property
    def started(self) -> bool:
        return self.inner.started

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def send(self, status: int, headers: Headers, body: bytes) -> None:
        self._keep(len(body))
        self._copy.send(status, headers, body)
        self.inner.send(status, headers, body)

    def start(self, status: int, headers: Headers, content_length: int | None = None, hold: bool = False) -> None:
        self._copy.start(status, headers, content_length)
        self.inner.start(status, headers, content_length, hold)

    def flush(self) -> None:
        self.inner.flush()

    def write_nowait(self, data: bytes) -> bool:
        if self._keep(len(data)):
            self._copy.write_nowait(data)
        return self.inner.write_nowait(data)

    def on_writable(self, callback: Callable[[], None]) -> None:
        self.inner.on_writable(callback)

    def end(self) -> None:
        self._copy.end()
        self.inner.end()

    def abort(self) -> None:
        self._copy.abort()
        self.inner.abort()

    def _keep(self, n: int) -> bool:
        self._size += n
        if self._size > self.max_bytes:
            self._over = True
        return not self._over

    def recording(self) -> Recorded | None:
        if self._over or self._copy.aborted or not self._copy.finished:
            return None
        return self._copy.answer
