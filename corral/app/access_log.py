"""The access log on the hot path: one JSON line per request, written in batches.

Through `logging`, each access line cost a LogRecord (a dozen attributes, the thread and process
looked up), the formatter's `json.dumps` with a fresh encoder, the handler's lock and one write
system call: about a tenth of the gateway's CPU with every feature on (docs/benchmarks.md, "The hot
path with every feature on"). Here a line is built from the record's fields and encoded with orjson as
the request ends (the same fields as the `corral.access` logger's lines, so readers see no difference
but spacing), and lines are written together: when `linger_s` has passed since the first unwritten
line, or `max_lines` are waiting, whichever comes first. The write itself runs in a thread of its
own, under the log handler's lock (so a diagnostic line is never cut into), so a slow stderr reader
(a pipe to a log shipper) never holds the event loop.

What a crash can lose: the lines of the last `linger_s` (or `max_lines`) not yet handed to the
writer. A clean shutdown (`close()`, called by `serve` after the last request) writes everything.
Used only when lines are JSON (the service's format off a terminal); on a terminal, lines go through
`logging` as before (`logs.access_observer`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

import orjson

from corral.app import logs
from corral.domain.record import RequestRecord

LINGER_S = 0.05  # a crash loses at most this much of the log (or MAX_LINES lines)
MAX_LINES = 512


class AccessWriter:
    """One process's batched access log. `observe` is the gateway's observer."""

    def __init__(self, stream: IO[str], lock: threading.RLock | None, linger_s: float = LINGER_S,
                 max_lines: int = MAX_LINES) -> None:  # fmt: skip
        self.stream = stream
        self.lock = lock or threading.RLock()
        self.linger_s = linger_s
        self.max_lines = max_lines
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="corral-access")
        self._last: Future[None] | None = None
        self.failed = 0  # batches the stream refused (a closed or broken stderr: nowhere to say so)

    def observe(self, record: RequestRecord) -> None:
        """One line per request. Never the prompt, never a key (the record holds neither)."""
        line = {
            "ts": round(time.time(), 6),
            "level": "info",
            "logger": "corral.access",
            "msg": f"{record.method} {record.path} {record.status}",
            **logs.PROCESS_FIELDS,
            **logs.access_fields(record),
        }
        lines = self._lines
        lines.append(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))
        if len(lines) >= self.max_lines:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self.flush)

    def flush(self) -> None:
        """Hand every waiting line to the writer thread (in order: one thread, one queue)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            data, self._lines = b"".join(self._lines), []
            self._last = self._thread.submit(self._write, data)

    def _write(self, data: bytes) -> None:
        with self.lock:
            try:
                self.stream.flush()  # whatever the text layer holds goes first, in order
                buffer = getattr(self.stream, "buffer", None)
                if buffer is not None:
                    buffer.write(data)
                    buffer.flush()
                else:  # a text-only stream (a test's capture): the lines are UTF-8 JSON
                    self.stream.write(data.decode())
                    self.stream.flush()
            except (OSError, ValueError):
                self.failed += 1

    async def close(self) -> None:
        """Write out every line observed so far, then stop the writer thread."""
        self.flush()
        last = self._last
        if last is not None:
            await asyncio.wrap_future(last)
        self._thread.shutdown(wait=True)


_writers: dict[int, AccessWriter] = {}  # per process: workers fork, and a thread does not survive it


def access_observer() -> logs.Observer:
    """The access log's observer for this process: the batched writer when the access lines are JSON
    on the standard handler (decided once, here, not per request), else a line through `logging`."""
    handler = logs.json_handler()
    if handler is None or not logs.ACCESS.isEnabledFor(logging.INFO):
        return logs.access_observer
    writer = _writers.get(os.getpid())
    if writer is None:
        _writers.clear()
        writer = _writers[os.getpid()] = AccessWriter(handler.stream or sys.stderr, handler.lock)
    return writer.observe


async def close() -> None:
    """Write out what this process has buffered (at shutdown, after the last request)."""
    writer = _writers.pop(os.getpid(), None)
    if writer is not None:
        await writer.close()
