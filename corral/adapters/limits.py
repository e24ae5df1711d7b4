"""Request, token and concurrency limits: in process for one replica, in Redis for several. A request's
admission is one step for all of its limits (per-key, per-address and global requests per minute, the
token reservation, the concurrency slot): one synchronous O(1) pass over in-process counters, or one Lua
script call on Redis (atomic, so replicas together never admit more than the limit), shared with the
other admissions of the same moment (`limit_redis.py`). Settling it (the tokens actually used, the
freed slot) rides on a later call. All or nothing: a request one limit refuses uses up nothing in the
others.

Requests and tokens use a sliding-window counter: the current and the previous window's counts, the
previous weighted by how much of it still overlaps the last 60 s. Exact within a window, a close
approximation across its boundary, and O(1) per check. A burst caps what may be spent in a slice of the
minute: `rpm=60, burst=10` admits at most 10 in any 10 s, and at most 60 in any minute. In memory the
clock is `time.time`; on Redis it is the server's, so that replicas agree.

This replaced the `limits` library (one storage call per window and per step: five to eight awaits for a
request with every limit on); the measurement is in docs/benchmarks.md, "The hot path with every feature
on".
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from corral.adapters.limit_redis import RedisLimits, Settlement
from corral.adapters.limit_windows import CONCURRENCY, REQUESTS, TOKENS, MemoryCounters, Outcome, Window


class OnStoreError(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Scope:
    """One thing to limit: `key` names it (`key:team-a`, `ip:10.0.0.7`, `global`); `per_minute` is the
    limit; `burst`, if below it, caps any slice of the minute in proportion."""

    key: str
    per_minute: int
    burst: int | None = None


# Built per request, never changed: not `frozen`, whose __init__ sets each field through
# object.__setattr__ (about three times the cost; docs/benchmarks.md §5).
@dataclass(slots=True)
class Decision:
    """What the gateway needs to answer and label a request. When the store failed, `store_error` says
    why and `allowed` follows the configured policy."""

    allowed: bool
    limit: int | None = None
    remaining: int | None = None
    reset_s: float = 0.0
    retry_after_s: float | None = None
    scope: str | None = None
    store_error: str | None = None

    def headers(self) -> dict[str, str]:
        """`RateLimit-*` for the tightest scope, and `Retry-After` on a rejection (whole seconds, ≥ 1)."""
        return {_SPELLED[name]: value.decode() for name, value in self.header_pairs()}

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as the HTTP server takes them (names in lower case); once per limited request."""
        out = []
        if self.limit is not None and self.remaining is not None:
            out = [
                (b"ratelimit-limit", str(self.limit).encode()),
                (b"ratelimit-remaining", str(max(0, self.remaining)).encode()),
                (b"ratelimit-reset", str(max(0, math.ceil(self.reset_s))).encode()),
            ]
        if not self.allowed and self.retry_after_s is not None:
            out.append((b"retry-after", str(max(1, math.ceil(self.retry_after_s))).encode()))
        return out


_SPELLED = {
    b"ratelimit-limit": "RateLimit-Limit",
    b"ratelimit-remaining": "RateLimit-Remaining",
    b"ratelimit-reset": "RateLimit-Reset",
    b"retry-after": "Retry-After",
}


@dataclass(slots=True)
class TokenReservation:
    """Tokens set aside at admission: `charged` is (window name, window seconds, tokens) for each token
    window, `at_ms` the store's clock then (settling corrects that same window)."""

    decision: Decision
    charged: tuple[tuple[str, int, int], ...] = ()
    at_ms: int = 0


@dataclass(slots=True)
class Admission:
    """One request's admission over all of its limits. `refused`: None, or which limit refused it
    ("rate_limited", "token_limited", "concurrency_limited"), with `decision` saying why; admitted,
    `decision` is the tightest request-rate scope (for the `RateLimit-*` headers), `tokens` the
    reservation to settle, `slot` the concurrency slot to free."""

    decision: Decision
    refused: str | None = None
    tokens: TokenReservation | None = None
    slot: str | None = None
    slots_used: int = 0


SETTLE_LINGER_S = 0.02  # at most this late on Redis, when no admission of this process carries it
SETTLE_BATCH = 256  # settlements sent together at most, when they pile up faster than admissions come


_ALLOWED = Admission(Decision(True))  # nothing to check: shared, so never changed


def _picked(plan: tuple[Window, ...], pick: tuple[int, int, int] | None) -> Decision:
    """The admitted decision of one group: its tightest window (index, remaining, reset ms), if any."""
    if pick is None:
        return _ALLOWED.decision
    j, remaining, reset_ms = pick
    w = plan[j]
    return Decision(True, w.amount, remaining, reset_ms / 1000, None, w.scope)


_REFUSED = {REQUESTS: "rate_limited", TOKENS: "token_limited", CONCURRENCY: "concurrency_limited"}


@functools.lru_cache(maxsize=8192)
def _windows(namespace: str, scope: Scope, group: int) -> tuple[tuple[str, int, int], ...]:
    """(storage name, amount, seconds) of a scope's windows: the minute, and the burst's slice of it."""
    kind = "r" if group == REQUESTS else "t"
    out = [(f"{namespace}:{kind}:{scope.key}:{scope.per_minute}:60", scope.per_minute, 60)]
    if scope.burst is not None and 0 < scope.burst < scope.per_minute:
        seconds = max(1, round(60 * scope.burst / scope.per_minute))
        out.append((f"{namespace}:{kind}:{scope.key}:{scope.burst}:{seconds}", scope.burst, seconds))
    return tuple(out)


@functools.lru_cache(maxsize=8192)
def _plan(namespace: str, requests: tuple[Scope, ...], tokens: tuple[Scope, ...], cost: int) -> tuple[Window, ...]:
    """Every window one admission checks, request scopes first (they refuse first). Cached: a gateway sees
    the same few combinations of scopes over and over (per key, per address)."""
    plan: list[Window] = []
    for group, scopes, charge in ((REQUESTS, requests, 1), (TOKENS, tokens, cost)):
        for scope in scopes:
            for name, amount, seconds in _windows(namespace, scope, group):
                # A cost above a whole window still gets in when the window is empty.
                plan.append(Window(name, scope.key, amount, seconds, min(charge, amount), group))
    return tuple(plan)


class LimitStore:
    """`LimitStore("memory://")` or `LimitStore("redis://127.0.0.1:6379/0", on_store_error="deny")`."""

    def __init__(
        self,
        uri: str = "memory://",
        *,
        on_store_error: OnStoreError | str = OnStoreError.ALLOW,
        namespace: str = "corral",
        timeout_s: float = 0.5,
        concurrency_ttl_s: int = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.on_store_error = OnStoreError(on_store_error)
        self.namespace, self.concurrency_ttl_s, self._clock = namespace, concurrency_ttl_s, clock
        self._redis: aioredis.Redis | None = None  # for readiness (PING) only
        self._remote: RedisLimits | None = None  # admissions and settlements
        self._flush_timer: asyncio.TimerHandle | None = None
        self._memory = MemoryCounters()
        if uri.startswith(("redis://", "rediss://")):
            # Admissions never wait for a connection: they share one held connection, a call at a time
            # (limit_redis.py), so any number of concurrent admissions is a matter of queueing, not of
            # running out (redis-py's default pool refused beyond 100 in use).
            self._remote = RedisLimits(uri, timeout_s, concurrency_ttl_s, self._orphaned)
            self._redis = aioredis.Redis.from_url(uri, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        elif not uri.startswith("memory://"):
            raise ValueError(f"unsupported limit store {uri!r}: use memory:// or redis://")

    async def close(self) -> None:
        """Send the settlements still waiting, then close the connections."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._remote is not None:
            await self._remote.close()
        if self._redis is not None:
            await self._redis.aclose()

    def _failed(self, exc: BaseException) -> Decision:
        reason = f"{type(exc).__name__}: {exc}"
        return Decision(self.on_store_error is OnStoreError.ALLOW, store_error=reason)

    def _plan(self, requests: Sequence[Scope], tokens: Sequence[Scope], estimate: int) -> tuple[Window, ...]:
        return _plan(self.namespace, tuple(requests), tuple(tokens), max(0, estimate))

    @property
    def in_memory(self) -> bool:
        """Whether admissions are synchronous steps (`admit_now`) and settlements are done at once."""
        return self._redis is None

    def plan(self, requests: Sequence[Scope], tokens: Sequence[Scope] = (), estimate: int = 0) -> tuple[Window, ...]:
        """Every window an admission with these scopes checks (cached): for `admit_plan`/`admit_now`."""
        return self._plan(requests, tokens, estimate)

    async def admit(
        self,
        requests: Sequence[Scope],
        tokens: Sequence[Scope] = (),
        estimate: int = 0,
        slot: str | None = None,
        slot_limit: int = 0,
    ) -> Admission:
        """Admit one request against every request-rate scope (cost 1), reserve `estimate` tokens in
        every token scope and take one of `slot_limit` concurrent slots of `slot`: all in one step."""
        return await self.admit_plan(self._plan(requests, tokens, estimate), bool(tokens), slot, slot_limit)

    async def admit_plan(
        self, plan: tuple[Window, ...], tokens: bool, slot: str | None = None, slot_limit: int = 0
    ) -> Admission:
        """`admit` with the windows already planned (`plan`); `tokens`: whether it reserves tokens."""
        if self._remote is None:
            return self.admit_now(plan, tokens, slot, slot_limit)
        if not plan and slot is None:
            return _ALLOWED
        try:
            # Settlements waiting ride on the same call, settled first (one round trip for both).
            outcome = await self._remote.admit(plan, self._slot_name(slot), slot_limit)
        except (RedisError, OSError) as exc:
            failed = self._failed(exc)
            return Admission(failed, None if failed.allowed else _REFUSED[REQUESTS])
        return self._admission(plan, outcome, tokens, slot, slot_limit)

    def admit_now(
        self, plan: tuple[Window, ...], tokens: bool, slot: str | None = None, slot_limit: int = 0
    ) -> Admission:
        """`admit_plan` in memory, synchronously: no coroutine and no await on the request's path."""
        if not plan and slot is None:
            return _ALLOWED
        outcome = self._memory.admit(plan, int(self._clock() * 1000), self._slot_name(slot), slot_limit)
        return self._admission(plan, outcome, tokens, slot, slot_limit)

    def _slot_name(self, slot: str | None) -> str | None:
        return f"{self.namespace}:conc:{slot}" if slot is not None else None

    def _admission(
        self, plan: tuple[Window, ...], outcome: Outcome, tokens: bool, slot: str | None, slot_limit: int
    ) -> Admission:
        if outcome.status == CONCURRENCY:
            decision = Decision(False, slot_limit, 0, 1.0, 1.0, slot)
            return Admission(decision, _REFUSED[CONCURRENCY])
        if outcome.status:
            j, remaining, reset_ms = outcome.picks[outcome.status]
            w = plan[j]
            decision = Decision(False, w.amount, remaining, reset_ms / 1000, reset_ms / 1000, w.scope)
            return Admission(decision, _REFUSED[outcome.status])

        picks = outcome.picks
        reservation = None
        if tokens:
            charged = tuple((w.name, w.seconds, w.cost) for w in plan if w.group == TOKENS)
            reservation = TokenReservation(_picked(plan, picks.get(TOKENS)), charged, outcome.at_ms)
        return Admission(_picked(plan, picks.get(REQUESTS)), None, reservation, slot, outcome.slots_used)

    def _settlement(self, reservation: TokenReservation | None, actual: int, slot: str | None) -> Settlement | None:
        charges = [(n, s, actual - r) for n, s, r in reservation.charged] if reservation is not None else []
        charges = [c for c in charges if c[2]]
        if not charges and slot is None:
            return None
        return charges, reservation.at_ms if reservation is not None else 0, self._slot_name(slot)

    async def settle(self, reservation: TokenReservation | None, actual: int, slot: str | None) -> str | None:
        """Charge the tokens actually used (the difference from the reservation is charged or given
        back, over the limit if need be) and free `slot`, in one step, now. Returns the store's error,
        if any."""
        entry = self._settlement(reservation, actual, slot)
        if entry is None:
            return None
        if self._remote is None:
            self._memory.settle(*entry)
            return None
        return await self._remote.settle(entry)

    def settle_later(self, reservation: TokenReservation | None, actual: int, slot: str | None) -> None:
        """`settle` without waiting (the gateway's observer, as a request ends). In memory it is done
        now. On Redis it is carried by this process's next admission (so it is always settled before
        that admission is checked), or sent on its own, batched with others, after SETTLE_LINGER_S
        when no admission comes first: one round trip per request instead of two. Other replicas may
        see a settlement up to SETTLE_LINGER_S late (a slot freed, tokens charged or given back); a
        crash loses the settlements of that last moment (the slot then frees at its TTL)."""
        entry = self._settlement(reservation, actual, slot)
        if entry is None:
            return
        if self._remote is None:
            self._memory.settle(*entry)
            return
        self._leave(entry)

    def _leave(self, entry: Settlement) -> None:
        assert self._remote is not None
        self._remote.settle_later(entry)
        if self._remote.settlements_waiting >= SETTLE_BATCH:
            self._remote.flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(SETTLE_LINGER_S, self._flush)

    def _flush(self) -> None:
        # At most SETTLE_LINGER_S after the first settlement left since the last flush (those that rode
        # on an admission meanwhile are gone already; flushing nothing costs nothing).
        self._flush_timer = None
        if self._remote is not None:
            self._remote.flush()

    def _orphaned(self, plan: tuple[Window, ...], slot: str | None, slot_limit: int, outcome: Outcome) -> None:
        """An admission granted after its waiter was cancelled (the client went away first): give back
        its slot and its reserved tokens; its request counts stay spent, as the request was made."""
        charges = [(w.name, w.seconds, -w.cost) for w in plan if w.group == TOKENS and w.cost]
        if charges or slot is not None:
            self._leave((charges, outcome.at_ms, slot))

    # One limit at a time (the contract tests, tools): each is an admission with just that limit.

    async def check_request(self, scopes: Sequence[Scope]) -> Decision:
        """Admit one request against every scope (all or nothing)."""
        return (await self.admit(scopes)).decision

    async def reserve_tokens(self, scopes: Sequence[Scope], estimate: int) -> TokenReservation:
        """Admit a request on its estimated tokens (at most a whole window's worth) and set them aside."""
        admission = await self.admit((), scopes, estimate)
        if admission.refused is not None or admission.decision.store_error is not None:
            return TokenReservation(admission.decision)
        return admission.tokens or TokenReservation(admission.decision)

    async def charge_tokens(self, reservation: TokenReservation, actual: int) -> str | None:
        """Settle a reservation with the tokens actually used."""
        return await self.settle(reservation, actual, None)

    async def acquire(self, key: str, limit: int) -> Decision:
        """Take one of `limit` concurrent slots of `key`; give it back with `release(key)`."""
        admission = await self.admit((), slot=key, slot_limit=limit)
        if admission.refused is not None or admission.decision.store_error is not None:
            return admission.decision
        return Decision(True, limit, limit - admission.slots_used, 0.0, None, key)

    async def release(self, key: str) -> str | None:
        return await self.settle(None, 0, key)

    async def check(self) -> bool:
        """Whether the store answers (for readiness)."""
        if self._redis is None:
            return True
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False
