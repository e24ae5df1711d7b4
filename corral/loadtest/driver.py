"""The two ways of offering load, over callback-driven connections (conn.py).

Closed loop (`--concurrency N`): N connections, each sending its next request the moment the previous
answer ends; it measures what the server sustains, but a slow server slows the load down with it.
Open loop (`--rate R/s`): requests are due at Poisson arrival times fixed in advance and go out on any
idle connection (a new one if none is idle); latency counts from the due time, so queueing at the
server, or in the load generator when it runs out of connections, is reported rather than hidden.
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from time import perf_counter

from corral.loadtest.conn import Conn
from corral.loadtest.frames import NdjsonReader, SseReader, StreamReader, answer_tokens, error_message
from corral.loadtest.record import Recorder
from corral.loadtest.requests import Target
from corral.loadtest.schedule import arrivals_until

RETRY_CONNECT_S = 0.05  # a closed-loop slot whose connection was refused tries again after this
# An idle connection older than this is not reused: servers drop idle keep-alive connections (uvicorn
# after 5 s), and a request written into one that is being closed would be counted as the server's error.
IDLE_REUSE_S = 2.0


class Driver:
    """What both modes share: connecting, reading an answer into the recorder, timeouts and the end."""

    def __init__(self, target: Target, requests: list[bytes], stream: bool, timeout_s: float) -> None:
        self.target = target
        self.requests = requests
        self.stream = stream
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self.ssl = ssl.create_default_context() if target.tls else None
        self.recorder = Recorder(perf_counter())
        self.conns: set[Conn] = set()
        self.issued = 0
        self.in_flight = 0  # requests sent or connecting, not yet recorded
        self.connecting = 0
        self.stopped = False
        self.aborted = False
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._next = 0
        self._reader: Callable[[], StreamReader] = NdjsonReader if target.api == "ollama" else SseReader
        self._sweeper = self.loop.call_later(min(1.0, timeout_s / 4), self._sweep)

    # to override

    def start(self) -> None:
        raise NotImplementedError

    def free(self, conn: Conn) -> None:
        """`conn` finished an exchange and can take another."""
        raise NotImplementedError

    def lost(self, conn: Conn) -> None:
        """`conn` is gone (closed by either side)."""

    # shared

    def request(self) -> bytes:
        data = self.requests[self._next]
        self._next = (self._next + 1) % len(self.requests)
        self.issued += 1
        self.in_flight += 1
        return data

    def new_reader(self) -> StreamReader | None:
        return self._reader() if self.stream else None

    def connect(self, request: bytes, scheduled: float) -> None:
        """Open a connection that sends `request` (due at `scheduled`) once it is up."""
        coro = self.loop.create_connection(
            lambda: Conn(self, (request, scheduled)),
            self.target.host,
            self.target.port,
            ssl=self.ssl,
        )
        self.connecting += 1
        task = self.loop.create_task(asyncio.wait_for(coro, self.timeout_s))
        task.add_done_callback(lambda t: self._connected(t, scheduled))

    def _connected(self, task: asyncio.Task[object], scheduled: float) -> None:
        self.connecting -= 1
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        if exc is None:
            return
        detail = "connecting timed out" if isinstance(exc, TimeoutError) else f"cannot connect: {exc}"
        now = perf_counter()
        self.in_flight -= 1
        self.recorder.failure(scheduled, now, now, "connect", detail)
        self.connect_failed()
        self.check_done()

    def connect_failed(self) -> None:
        """A connection attempt failed (its request is already recorded as an error)."""

    def answered(self, conn: Conn, keep_alive: bool) -> None:
        """The whole answer is in: record it, then reuse the connection or replace it."""
        now = conn.now
        self.in_flight -= 1
        rec = self.recorder
        reader = conn.reader
        if reader is not None:
            reader.end(now)
            if reader.error is not None:
                rec.failure(conn.scheduled, conn.sent, now, "stream error", reader.error)
            elif not reader.done:
                rec.failure(conn.scheduled, conn.sent, now, "incomplete", "the stream ended without its end marker")
            else:
                tokens = reader.tokens
                first, last = reader.first_token, reader.last_token
                rate = (tokens - 1) / (last - first) if first is not None and last and last > first else math.nan
                rec.success(conn.scheduled, conn.sent, first, now, tokens, rate, reader.gaps)
        elif 200 <= conn.status < 300:
            tokens = answer_tokens(self.target.api, b"".join(conn.body)) or 0
            took = now - conn.scheduled
            rec.success(conn.scheduled, conn.sent, conn.head_at, now, tokens, tokens / took if took > 0 else math.nan)
        else:
            rec.failure(conn.scheduled, conn.sent, now, str(conn.status), error_message(b"".join(conn.body)))
        if keep_alive:
            self.free(conn)
        else:
            conn.close()
            self.replace(conn)
        self.check_done()

    def replace(self, conn: Conn) -> None:
        """The server closed `conn` after its answer: carry on with a new connection."""

    def broken(self, conn: Conn, kind: str, detail: str) -> None:
        """The exchange on `conn` failed without a whole answer."""
        now = perf_counter()
        self.in_flight -= 1
        self.recorder.failure(conn.scheduled, conn.sent, now, kind, detail)
        self.check_done()

    def _sweep(self) -> None:
        now = perf_counter()
        for conn in list(self.conns):
            if conn.busy and now - conn.sent > self.timeout_s:
                conn.busy = False
                conn.close()
                self.broken(conn, "timeout", f"no whole answer in {self.timeout_s:g}s")
        self.check_done()
        if not self.done.done():
            self._sweeper = self.loop.call_later(min(1.0, self.timeout_s / 4), self._sweep)

    def stop(self) -> None:
        """Send nothing more; the run ends when what is in flight has been answered."""
        self.stopped = True
        self.check_done()

    def abort(self) -> None:
        """End now: what is in flight is dropped unrecorded (Ctrl-C)."""
        self.stopped = self.aborted = True
        for conn in list(self.conns):
            conn.busy = False
            conn.close()
        self.in_flight = 0
        self.check_done()

    def check_done(self) -> None:
        if self.stopped and self.in_flight <= 0 and not self.done.done():
            self._sweeper.cancel()
            for conn in list(self.conns):
                conn.close()
            self.done.set_result(None)


class ClosedLoop(Driver):
    def __init__(
        self,
        target: Target,
        requests: list[bytes],
        stream: bool,
        timeout_s: float,
        concurrency: int,
        duration_s: float | None,
        count: int | None,
    ) -> None:
        super().__init__(target, requests, stream, timeout_s)
        self.concurrency = concurrency
        self.duration_s = duration_s
        self.count = count

    def start(self) -> None:
        self.recorder.origin = perf_counter()
        if self.duration_s is not None:
            self.loop.call_later(self.duration_s, self.stop)
        for _ in range(self.concurrency):
            self._slot()

    def _more(self) -> bool:
        if self.stopped or (self.count is not None and self.issued >= self.count):
            self.stopped = True
            return False
        return True

    def _slot(self) -> None:
        """A slot with no connection: send its next request on a new one."""
        if self._more():
            self.connect(self.request(), perf_counter())
        self.check_done()

    def free(self, conn: Conn) -> None:
        if self._more():
            conn.send(self.request(), perf_counter())
        else:
            conn.close()

    def replace(self, conn: Conn) -> None:
        self._slot()

    def broken(self, conn: Conn, kind: str, detail: str) -> None:
        super().broken(conn, kind, detail)
        self._slot()

    def connect_failed(self) -> None:
        if not self.stopped:
            self.loop.call_later(RETRY_CONNECT_S, self._slot)


class OpenLoop(Driver):
    def __init__(
        self,
        target: Target,
        requests: list[bytes],
        stream: bool,
        timeout_s: float,
        rate: float,
        duration_s: float | None,
        count: int | None,
        max_connections: int,
        seed: int | None = None,
    ) -> None:
        super().__init__(target, requests, stream, timeout_s)
        self.rate = rate
        self.max_connections = max_connections
        self.idle: list[Conn] = []
        self.pending: deque[float] = deque()  # due times of requests waiting for a connection
        self._arrivals: Iterator[float] = arrivals_until(rate, random.Random(seed), duration_s, count)
        self._due: float | None = None

    def start(self) -> None:
        self.recorder.origin = perf_counter()
        self._due = next(self._arrivals, None)
        self._tick()

    def _tick(self) -> None:
        origin = self.recorder.origin
        now = perf_counter() - origin
        while self._due is not None and self._due <= now and not self.stopped:
            self._dispatch(origin + self._due)
            self._due = next(self._arrivals, None)
        if self._due is None or self.stopped:
            self.stop()
            return
        self.loop.call_later(max(0.0, self._due - (perf_counter() - origin)), self._tick)

    def _dispatch(self, scheduled: float) -> None:
        while self.idle:
            conn = self.idle.pop()  # the most recently used: the last to go stale
            if conn.closed:
                continue
            if scheduled - conn.now > IDLE_REUSE_S:
                for stale in [conn, *self.idle]:
                    stale.close()
                self.idle.clear()
                break
            conn.send(self.request(), scheduled)
            return
        if len(self.conns) + self.connecting < self.max_connections:
            self.connect(self.request(), scheduled)
        else:
            self.pending.append(scheduled)  # counted in flight once it goes out

    def free(self, conn: Conn) -> None:
        if self.pending:
            conn.send(self.request(), self.pending.popleft())
        else:
            self.idle.append(conn)

    def connect_failed(self) -> None:
        self._drain_pending()

    def lost(self, conn: Conn) -> None:
        self._drain_pending()

    def replace(self, conn: Conn) -> None:
        self._drain_pending()

    def _drain_pending(self) -> None:
        while self.pending and len(self.conns) + self.connecting < self.max_connections:
            self.connect(self.request(), self.pending.popleft())

    def abort(self) -> None:
        self.pending.clear()
        super().abort()

    def check_done(self) -> None:
        if self.pending and self.stopped and not self.conns and not self.connecting:
            self._drain_pending()
        if not self.pending:
            super().check_done()
