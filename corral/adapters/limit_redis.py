"""The limits' Redis client: the admissions that arrive together go to Redis together, in one script
call over one held connection (issue 12; docs/benchmarks.md §5, "Scale-out").

Each admission waits on a future. The first one queued starts a sender task; it runs after the
callbacks of the current event-loop tick, so every admission of that tick rides on the same call, each
still answered on its own (all or nothing over its limits, in arrival order: `limit_script.py`). While
a call is out, newcomers queue and go together in the next: one round trip for many when the gateway is
busy, one per request when it is idle. Settlements left for later ride on the next call (applied first).

Why not redis-py's `Script` through its pool per call: most of a call's CPU was redis-py's per-command
machinery (packing every argument, the pool's acquire and release, a task for the write timeout).
Here the command is packed from bytes cached per combination of limits, and the connection is one of
redis-py's, held by the sender: only one call is out at a time, so it never waits for a connection,
whatever the number of admissions waiting. A call that fails or outlasts `timeout_s` (all of it:
connecting, writing, reading, reloading the script) answers every admission in it with the error (the
store's `on_store_error` then decides), and the connection is opened again for the next. A call that
timed out also answers the admissions queued behind it with the same error: the store did not answer
within `timeout_s`, and none of them waits longer than that for its decision.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as StoreTimeout

from corral.adapters.limit_script import SCRIPT
from corral.adapters.limit_windows import REQUESTS, TOKENS, Outcome, Window

# A settlement: the token windows' (name, seconds, delta), the reservation's clock, the slot to free.
Settlement = tuple[list[tuple[str, int, int]], int, str | None]
# One admission waiting: its plan, slot (full name or None), slot limit and the future it is answered on.
_Waiting = tuple[tuple[Window, ...], str | None, int, "asyncio.Future[Outcome | Exception]"]

BATCH_MAX = 128  # admissions in one script call at most; more go in the next
SETTLE_MAX = 256  # settlements in one script call at most (a backlog after a stall goes over several)
_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest().encode()
_HEAD = b"$7\r\nEVALSHA\r\n$40\r\n" + _SHA + b"\r\n"


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _num(value: int) -> bytes:
    return _bulk(b"%d" % value)


@functools.lru_cache(maxsize=8192)
def _packed(plan: tuple[Window, ...], slot: str | None, slot_limit: int) -> tuple[bytes, int, bytes, int]:
    """One admission's KEYS and ARGV, packed once per combination of limits: (keys, count, args, count)."""
    keys = [_bulk(w.name.encode()) for w in plan] + ([_bulk(slot.encode())] if slot is not None else [])
    args = [_num(len(plan)), _num(int(slot is not None)), _num(slot_limit if slot is not None else 0)]
    for w in plan:
        args += [_num(w.amount), _num(w.seconds), _num(w.cost), _num(w.group)]
    return b"".join(keys), len(keys), b"".join(args), len(args)


def _pack_settlements(settles: list[Settlement], keys: list[bytes], args: list[bytes]) -> None:
    for charges, at_ms, slot in settles:
        args += [_num(len(charges)), _num(int(slot is not None)), _num(at_ms)]
        for name, seconds, delta in charges:
            keys.append(_bulk(name.encode()))
            args += [_num(seconds), _num(delta)]
        if slot is not None:
            keys.append(_bulk(slot.encode()))


def pack(batch: list[_Waiting], settles: list[Settlement], slot_ttl_s: int) -> bytes:
    """The EVALSHA command (RESP) for some admissions and settlements: limit_script.py's layout."""
    keys: list[bytes] = []
    args: list[bytes] = [_num(slot_ttl_s), _num(len(settles))]
    _pack_settlements(settles, keys, args)
    nkeys, nargs = len(keys), len(args) + 1
    args.append(_num(len(batch)))
    for plan, slot, slot_limit, _ in batch:
        k, kn, a, an = _packed(plan, slot, slot_limit)
        keys.append(k)
        args.append(a)
        nkeys, nargs = nkeys + kn, nargs + an
    head = b"*%d\r\n%b%b" % (3 + nkeys + nargs, _HEAD, _num(nkeys))
    return head + b"".join(keys) + b"".join(args)


def outcomes(reply: bytes, count: int) -> list[Outcome]:
    """The script's answer for `count` admissions (limit_script.py's layout)."""
    v = reply.split()
    now = int(v[0])
    out = []
    for i in range(1, 8 * count, 8):
        status = int(v[i])
        if status:
            j = int(v[i + 2])
            out.append(Outcome(status, now, {status: (j - 1, int(v[i + 3]), int(v[i + 4]))} if j else {}))
            continue
        picks = {}
        if v[i + 2] != b"0":
            picks[REQUESTS] = (int(v[i + 2]) - 1, int(v[i + 3]), int(v[i + 4]))
        if v[i + 5] != b"0":
            picks[TOKENS] = (int(v[i + 5]) - 1, int(v[i + 6]), int(v[i + 7]))
        out.append(Outcome(0, now, picks, int(v[i + 1])))
    return out


class RedisLimits:
    """Admissions and settlements on one Redis, gathered into script calls over one held connection.
    `on_orphan(plan, slot, slot_limit, outcome)` is told of an admission whose waiter was cancelled
    before its answer came (the client went away): the store gives back what it took."""

    def __init__(
        self,
        uri: str,
        timeout_s: float,
        slot_ttl_s: int,
        on_orphan: Callable[[tuple[Window, ...], str | None, int, Outcome], None],
    ) -> None:
        self.timeout_s, self.slot_ttl_s, self._on_orphan = timeout_s, slot_ttl_s, on_orphan
        # No socket_timeout on this connection: redis-py would wrap every write in asyncio.wait_for (a
        # task per call); the read gets timeout_s below, and one call at most is ever unanswered.
        self._pool = aioredis.ConnectionPool.from_url(
            uri, max_connections=1, socket_timeout=None, socket_connect_timeout=timeout_s
        )
        self._conn: Any = None  # redis-py's connection, taken from the pool at the first call
        self._queue: list[_Waiting] = []
        self._settles: list[Settlement] = []
        self._settle_waiters: list[asyncio.Future[str | None] | None] = []  # one per settlement, or None
        self._settle_due = False  # settlements to send even without an admission to carry them
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def admit(self, plan: tuple[Window, ...], slot: str | None, slot_limit: int) -> Outcome:
        """One admission, answered with the others of its call; raises the call's RedisError/OSError."""
        if self._closed:
            raise RedisError("the limits store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome | Exception] = loop.create_future()
        self._queue.append((plan, slot, slot_limit, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send())
        try:
            answer = await future
        except asyncio.CancelledError:
            # Cancelled (the client went away) after the answer was set but before this task resumed:
            # `_send` saw a waiter still there, so what the admission took is given back here.
            if future.done() and not future.cancelled():
                late = future.result()
                if isinstance(late, Outcome) and not late.status:
                    self._on_orphan(plan, slot, slot_limit, late)
            raise
        if isinstance(answer, Exception):
            raise answer
        return answer

    def settle_later(self, entry: Settlement) -> None:
        """Carried by the next call (before its admissions); `flush()` sends it without one."""
        self._settles.append(entry)
        self._settle_waiters.append(None)

    @property
    def settlements_waiting(self) -> int:
        return len(self._settles)

    def flush(self) -> None:
        """Send the settlements waiting now, with the admissions queued if any."""
        if self._settles and not self._closed:
            self._settle_due = True
            if self._sender is None:
                self._sender = asyncio.get_running_loop().create_task(self._send())

    async def settle(self, entry: Settlement) -> str | None:
        """Settle now (with whatever call goes next); the store's error, if any."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._settles.append(entry)
        self._settle_waiters.append(future)
        self.flush()
        return await future

    async def _send(self) -> None:
        try:
            while self._queue or self._settle_due:
                batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                settles, self._settles = self._settles[:SETTLE_MAX], self._settles[SETTLE_MAX:]
                waiters, self._settle_waiters = self._settle_waiters[:SETTLE_MAX], self._settle_waiters[SETTLE_MAX:]
                self._settle_due = bool(self._settles)
                error: str | None = None
                answers: list[Outcome | Exception]
                try:
                    answers = list(await self._call(batch, settles))
                except Exception as exc:  # every waiter must get an answer, whatever went wrong
                    # The settlements carried along are lost with it, as a failed settlement always was.
                    failure = exc if isinstance(exc, (RedisError, OSError)) else RedisError(repr(exc))
                    answers, error = [failure] * len(batch), f"{type(failure).__name__}: {failure}"
                    if isinstance(failure, StoreTimeout):  # those queued meanwhile have waited long enough
                        batch, answers = batch + self._queue, answers + [failure] * len(self._queue)
                        self._queue = []
                for (plan, slot, slot_limit, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
                    elif future.cancelled() and isinstance(answer, Outcome) and not answer.status:
                        self._on_orphan(plan, slot, slot_limit, answer)
                for waiter in waiters:
                    if waiter is not None and not waiter.done():
                        waiter.set_result(error)
        finally:
            self._sender = None

    async def _call(self, batch: list[_Waiting], settles: list[Settlement]) -> list[Outcome]:
        command = pack(batch, settles, self.slot_ttl_s)
        try:
            # One deadline for the whole call: the connection has no socket timeout of its own (see
            # __init__), so a reconnect's handshake or a write to a stalled server is bounded here.
            async with asyncio.timeout(self.timeout_s):
                if self._conn is None:
                    self._conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                try:
                    reply = await self._roundtrip(command)
                except NoScriptError:
                    # Not loaded yet, or the server forgot it (restarted, SCRIPT FLUSH): nothing ran;
                    # load it, send again.
                    await self._conn.send_command("SCRIPT", "LOAD", SCRIPT, check_health=False)
                    await self._read()
                    reply = await self._roundtrip(command)
        except TimeoutError:  # asyncio.timeout's (the built-in), not redis-py's
            if self._conn is not None:
                await self._conn.disconnect(nowait=True)  # a late answer must not be read as the next one
            raise StoreTimeout(f"no answer from Redis within {self.timeout_s} s") from None
        return outcomes(reply, len(batch)) if batch else []

    async def _roundtrip(self, command: bytes) -> bytes:
        await self._conn.send_packed_command(command, check_health=False)
        reply = await self._read()
        assert isinstance(reply, bytes), reply
        return reply

    async def _read(self) -> object:
        # With an explicit timeout redis-py answers None when it runs out (the script always answers a
        # string) and keeps the connection: close it, or the late answer would be read as the next one.
        reply = await self._conn.read_response(timeout=self.timeout_s)
        if reply is None:
            await self._conn.disconnect(nowait=True)
            raise StoreTimeout(f"no answer from Redis within {self.timeout_s} s")
        return reply

    async def close(self) -> None:
        """Send what waits, then close the connection; later admissions fail, later settlements are
        dropped (a process shutting down)."""
        self.flush()
        self._closed = True
        while self._sender is not None:
            await asyncio.shield(self._sender)
        await self._pool.aclose()
