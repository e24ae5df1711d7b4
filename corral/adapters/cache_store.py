"""Where cached answers live: in this process's memory (LRU within a byte cap) or in Redis, shared by
every replica. Both hold opaque bytes under string keys, with a time to live; both refuse an entry
larger than `max_entry_bytes`. A Redis failure is a miss (and a store skipped), never an error the
client sees: the cache only saves work, the node can always answer.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# What an entry costs besides its key and value: the OrderedDict node, the tuple, the two objects' heads.
ENTRY_OVERHEAD = 160
_WARN_EVERY_S = 30.0
# After a failure, Redis is left alone this long: a server that is down (or a network that drops
# packets, each try waiting out the timeout) must not add its timeout to every request.
RETRY_AFTER_S = 2.0


class CacheStore(Protocol):
    """Opaque values under string keys. `get_many` keeps the order of `keys` (None for a miss)."""

    max_entry_bytes: int

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store what fits; returns how many entries were stored."""
        ...

    def size(self) -> int | None:
        """Bytes held, where this store knows it cheaply (memory), else None."""
        ...

    async def close(self) -> None: ...


class MemoryCacheStore:
    """One replica's cache: least recently used entries leave first once `max_bytes` is reached; an
    entry is never kept past its time to live."""

    def __init__(
        self, max_bytes: int, max_entry_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> bool:
        cost = len(key) + len(value) + ENTRY_OVERHEAD
        if len(value) > self.max_entry_bytes or cost > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self.clock() + self.ttl_s, value)
        self._bytes += cost
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        return True

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(key) + len(value) + ENTRY_OVERHEAD

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get(k) for k in keys]

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> int:
        return sum(self.put(k, v) for k, v in items)

    def size(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


class RedisCacheStore:
    """The cache shared by replicas. Entries expire by Redis's own TTL; the server's `maxmemory` (with
    an LRU eviction policy) caps the whole, which one replica cannot see."""

    def __init__(
        self, url: str, max_entry_bytes: int, ttl_s: float, namespace: str = "corral:cache:", timeout_s: float = 0.5
    ) -> None:
        self.max_entry_bytes = max_entry_bytes
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.namespace = namespace
        opts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self._redis = aioredis.Redis.from_url(url, **opts)
        self._warned_at = -_WARN_EVERY_S
        self._down_until = 0.0
        self.errors = 0

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        self._down_until = now + RETRY_AFTER_S
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("cache store unavailable (%s: %s); answering without the cache", type(exc).__name__, exc)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        if self._down_until and time.monotonic() < self._down_until:
            return [None] * len(keys)
        try:
            values = cast(list[bytes | None], await self._redis.mget([self.namespace + k for k in keys]))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [None] * len(keys)
        return values

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> int:
        kept = [(k, v) for k, v in items if len(v) <= self.max_entry_bytes]
        if not kept or (self._down_until and time.monotonic() < self._down_until):
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in kept:
                    pipe.set(self.namespace + key, value, px=self.ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return 0
        return len(kept)

    def size(self) -> None:
        return None

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(backend: str, redis_url: str | None, max_bytes: int, max_entry_bytes: int, ttl_s: float) -> CacheStore:
    if backend == "redis":
        assert redis_url is not None  # the settings refuse redis without a URL
        return RedisCacheStore(redis_url, max_entry_bytes, ttl_s)
    return MemoryCacheStore(max_bytes, max_entry_bytes, ttl_s)
