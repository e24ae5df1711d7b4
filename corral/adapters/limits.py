"""Request, token and concurrency limits over the `limits` library: in memory for one replica, in Redis
for several (every check is one atomic server-side step, so replicas together never admit more than the
limit). The library reads the wall clock itself, so reset times here are wall-clock (`time.time`) too.

Requests and tokens use a sliding-window counter: the current and the previous window's counts, the
previous weighted by how much of it still overlaps the last 60 s. Exact within a window, a close
approximation across its boundary, and O(1) per check (a moving window keeps one entry per request and
cost several times more per request on the proxy path). A burst caps what may be spent in a slice of the minute:
`rpm=60, burst=10` admits at most 10 in any 10 s, and at most 60 in any minute.
"""

from __future__ import annotations

import functools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import RateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

_FORCE = 2**31  # a limit no charge reaches: after-the-fact charges are recorded, never refused
_ACQUIRE = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return {0, n - 1}
end
return {1, n}
"""
_RELEASE = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) return 0 end
return n
"""


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


@dataclass(frozen=True, slots=True)
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
        out: dict[str, str] = {}
        if self.limit is not None and self.remaining is not None:
            out["RateLimit-Limit"] = str(self.limit)
            out["RateLimit-Remaining"] = str(max(0, self.remaining))
            out["RateLimit-Reset"] = str(max(0, math.ceil(self.reset_s)))
        if not self.allowed and self.retry_after_s is not None:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


@dataclass(frozen=True, slots=True)
class TokenReservation:
    decision: Decision
    charged: tuple[tuple[str, RateLimitItem, int], ...] = ()


def _items(scope: Scope, namespace: str) -> tuple[RateLimitItem, ...]:
    return _items_for(scope.per_minute, scope.burst, namespace)


@functools.lru_cache(maxsize=4096)
def _items_for(per_minute: int, burst: int | None, namespace: str) -> tuple[RateLimitItem, ...]:
    items: list[RateLimitItem] = [RateLimitItemPerMinute(per_minute, namespace=namespace)]
    if burst is not None and 0 < burst < per_minute:
        window = max(1, round(60 * burst / per_minute))
        items.append(RateLimitItemPerSecond(burst, window, namespace=namespace))
    return tuple(items)


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
        self._redis: aioredis.Redis | None = None
        self._counts: defaultdict[str, int] = defaultdict(int)
        if uri.startswith(("redis://", "rediss://")):
            opts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
            self.storage: MemoryStorage | RedisStorage = RedisStorage(
                "async+" + uri, implementation="redispy", wrap_exceptions=True, **opts
            )
            self._redis = aioredis.Redis.from_url(uri, **opts)
            self._acquire = self._redis.register_script(_ACQUIRE)
            self._release = self._redis.register_script(_RELEASE)
        elif uri.startswith("memory://"):
            self.storage = MemoryStorage(wrap_exceptions=True)
        else:
            raise ValueError(f"unsupported limit store {uri!r}: use memory:// or redis://")
        self._requests = SlidingWindowCounterRateLimiter(self.storage)
        self._tokens = SlidingWindowCounterRateLimiter(self.storage)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _failed(self, exc: BaseException) -> Decision:
        reason = f"{type(exc).__name__}: {exc}"
        return Decision(self.on_store_error is OnStoreError.ALLOW, store_error=reason)

    async def _stats(self, limiter: RateLimiter, key: str, item: RateLimitItem) -> tuple[int, float]:
        stats = await limiter.get_window_stats(item, key)
        return stats.remaining, max(0.0, stats.reset_time - self._clock())

    async def _window(self, key: str, item: RateLimitItem, cost: int) -> tuple[bool, int, float]:
        """One read of a sliding-window counter: whether `cost` more would fit (the limiter's own `test`
        rule), what remains, and the seconds until some of it frees. The same arithmetic as the `limits`
        strategy's `test` and `get_window_stats`, from one storage call instead of two."""
        expiry = item.get_expiry()
        previous, previous_expires_in, current, current_expires_in = await self.storage.get_sliding_window(
            item.key_for(key), expiry
        )
        weighted = previous * previous_expires_in / expiry + current
        fits = weighted < item.amount - cost + 1
        remaining = max(0, item.amount - math.floor(weighted))
        reset = min(
            previous_expires_in % (expiry / previous) if previous else math.inf,
            current_expires_in % expiry if current else math.inf,
        )
        return fits, remaining, float(expiry) if math.isinf(reset) else reset

    async def _check(self, limiter: RateLimiter, scopes: Sequence[Scope], cost: int) -> TokenReservation:
        pairs = [(s.key, item) for s in scopes for item in _items(s, self.namespace)]
        if not pairs:
            return TokenReservation(Decision(True))
        costs = [min(cost, item.amount) for _, item in pairs]
        # Read everything first, so that a request one scope refuses uses up nothing in the others.
        # Sequential awaits: in memory there is no I/O to overlap, and a task per scope costs more than it saves.
        windows = [await self._window(k, i, c) for (k, i), c in zip(pairs, costs, strict=True)]
        refused = next((n for n, (fits, _, _) in enumerate(windows) if not fits), None)
        hit: list[tuple[str, RateLimitItem, int]] = []
        if refused is None:
            for (key, item), c in zip(pairs, costs, strict=True):
                if not await limiter.hit(item, key, cost=c):
                    refused = len(hit)  # lost a race since the read: what was hit stays spent
                    break
                hit.append((key, item, c))
        if refused is not None:
            key, item = pairs[refused]
            remaining, reset = await self._stats(limiter, key, item)
            decision = Decision(False, item.amount, remaining, reset, reset, key)
            return TokenReservation(decision, tuple(hit))
        # Admitted: what remains after this request's own hits, for the tightest scope.
        after = [max(0, remaining - c) for (_, remaining, _), c in zip(windows, costs, strict=True)]
        n = min(range(len(pairs)), key=lambda j: after[j] / pairs[j][1].amount)
        decision = Decision(True, pairs[n][1].amount, after[n], windows[n][2], None, pairs[n][0])
        return TokenReservation(decision, tuple(hit))

    async def check_request(self, scopes: Sequence[Scope]) -> Decision:
        """Admit one request against every scope (all or nothing, as far as races allow)."""
        try:
            return (await self._check(self._requests, scopes, 1)).decision
        except (StorageError, RedisError, OSError) as exc:
            return self._failed(exc)

    async def reserve_tokens(self, scopes: Sequence[Scope], estimate: int) -> TokenReservation:
        """Admit a request on its estimated tokens (at most a whole window's worth) and set them aside."""
        try:
            return await self._check(self._tokens, scopes, max(0, estimate))
        except (StorageError, RedisError, OSError) as exc:
            return TokenReservation(self._failed(exc))

    async def charge_tokens(self, reservation: TokenReservation, actual: int) -> str | None:
        """Settle a reservation with the tokens actually used: the difference is charged or given back,
        over the limit if need be. Returns the store's error, if any."""
        try:
            for key, item, reserved in reservation.charged:
                if delta := actual - reserved:
                    full_key = item.key_for(key)
                    await self.storage.acquire_sliding_window_entry(full_key, _FORCE, item.get_expiry(), delta)
        except (StorageError, RedisError, OSError) as exc:
            return self._failed(exc).store_error
        return None

    async def acquire(self, key: str, limit: int) -> Decision:
        """Take one of `limit` concurrent slots of `key`; give it back with `release(key)`."""
        name = f"{self.namespace}:conc:{key}"
        if self._redis is None:
            if self._counts[name] >= limit:
                return Decision(False, limit, 0, 1.0, 1.0, key)
            self._counts[name] += 1
            return Decision(True, limit, limit - self._counts[name], 0.0, None, key)
        try:
            ok, n = await self._acquire(keys=[name], args=[limit, self.concurrency_ttl_s])
        except (RedisError, OSError) as exc:
            return self._failed(exc)
        return Decision(bool(ok), limit, limit - int(n), 0.0 if ok else 1.0, None if ok else 1.0, key)

    async def release(self, key: str) -> str | None:
        name = f"{self.namespace}:conc:{key}"
        if self._redis is None:
            self._counts[name] -= 1
            if self._counts[name] <= 0:
                del self._counts[name]
            return None
        try:
            await self._release(keys=[name])
        except (RedisError, OSError) as exc:
            return self._failed(exc).store_error
        return None

    async def check(self) -> bool:
        """Whether the store answers (for readiness)."""
        try:
            return bool(await self.storage.check())
        except (StorageError, RedisError, OSError):
            return False
