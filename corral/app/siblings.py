"""The local channel between the worker processes of one replica (`server.workers` > 1).

Each worker listens on a Unix socket in a private folder its parent created (mode 0700, removed when the
parent exits): `<run_dir>/worker-<k>.sock`. A message is one JSON line `{"op": ..., ...}`; the answer is
one JSON document, written before the worker closes the connection. Two uses:
- `ask("metrics")` at scrape time: every sibling's samples, so one scrape sums the replica
  (adapters/metrics_merge.py);
- `tell("probe", ...)`: a health check's result, so that one worker's probe serves all of them
  (app/discovery.py, "probes across workers").
A sibling that is down (restarting) or slow is left out of that answer, never waited on for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from corral.config import Settings

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
_LINE_LIMIT = 64 * 1024 * 1024  # a probe result carries a node's /api/tags: large for many models


@dataclass(frozen=True)
class WorkerContext:
    """Who this worker is, handed over by the supervisor (app/workers.py)."""

    index: int
    count: int
    run_dir: Path
    listener: socket.socket  # bound by the parent, SO_REUSEPORT, one per worker slot
    metrics_listener: socket.socket | None = None
    version: str = ""  # the replica's configuration hash, as its parent computed it: every worker reports it

    def path(self, index: int) -> Path:
        return self.run_dir / f"worker-{index}.sock"

    def settings_path(self, index: int | None = None) -> Path:
        """Where the parent leaves its reload order for a worker: `ReloadOrder` as JSON."""
        return self.run_dir / f"settings-{self.index if index is None else index}.json"

    def request_path(self) -> Path:
        """A worker asking its parent for a reload (POST /admin/reload) writes the trigger's name here."""
        return self.run_dir / "reload-trigger"

    def reload_order(self) -> ReloadOrder | None:
        try:
            text = self.settings_path().read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return ReloadOrder.model_validate_json(text)


class ReloadOrder(BaseModel):
    """What the parent tells each worker to apply: its share of the validated settings, or the problems
    that refused the file (so every worker reports the same refusal). `seq` counts the parent's reloads."""

    seq: int
    trigger: str
    version: str
    at: float  # when the parent validated it: every worker reports the same reload, whichever answers
    settings: Settings | None = None
    problems: list[tuple[str, str]] = []


class Siblings:
    def __init__(self, context: WorkerContext, handlers: dict[str, Handler], timeout_s: float = 2.0) -> None:
        self.context = context
        self.handlers = handlers
        self.timeout_s = timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        path = self.context.path(self.context.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this slot's previous worker
        self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=_LINE_LIMIT)
        os.chmod(path, 0o600)

    async def drained(self, timeout_s: float) -> None:
        """Say this worker has no request left (its socket goes), then wait up to `timeout_s` until
        every sibling has said the same (or is gone)."""
        self.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        others = [self.context.path(k) for k in self._others()]
        while any(path.exists() for path in others) and loop.time() < deadline:
            await asyncio.sleep(0.05)  # other processes' files: nothing to wait on but their absence

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            self.context.path(self.context.index).unlink()
        for task in self._tasks:
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            message = orjson.loads(await reader.readline())
            handler = self.handlers.get(str(message.get("op")))
            answer = await handler(message) if handler is not None else None
            writer.write(orjson.dumps(answer))
            await writer.drain()
        except Exception:  # one sibling's bad message must not take this worker down
            log.exception("worker channel: a message failed")
        finally:
            writer.close()

    def _others(self) -> list[int]:
        return [k for k in range(self.context.count) if k != self.context.index]

    async def _one(self, index: int, line: bytes) -> Any:
        reader, writer = await asyncio.open_unix_connection(str(self.context.path(index)))
        try:
            writer.write(line)
            await writer.drain()
            return orjson.loads(await reader.read())
        finally:
            writer.close()

    async def _bounded(self, index: int, line: bytes, timeout_s: float) -> tuple[bool, Any]:
        try:
            async with asyncio.timeout(timeout_s):
                return True, await self._one(index, line)
        except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.debug("worker %d did not answer: %s", index, exc)
            return False, None

    async def ask(self, op: str, *, wait_s: float | None = None, **fields: Any) -> list[Any]:
        """Every sibling's answer to `op` (those that answered within `wait_s`, by default `timeout_s`)."""
        line = orjson.dumps({"op": op, **fields}) + b"\n"
        timeout_s = self.timeout_s if wait_s is None else wait_s
        results = await asyncio.gather(*(self._bounded(k, line, timeout_s) for k in self._others()))
        return [answer for ok, answer in results if ok]

    def tell(self, op: str, **fields: Any) -> None:
        """Send `op` to every sibling without waiting for them."""
        if self.context.count > 1:
            self._spawn(self.ask(op, **fields))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
