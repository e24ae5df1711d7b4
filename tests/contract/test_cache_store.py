"""One suite over every CacheStore: in memory and on a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from corral.adapters.cache_store import CacheStore, MemoryCacheStore, RedisCacheStore

from .servers import run


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> object:
    def make(max_entry_bytes: int = 1000, ttl_s: float = 60.0) -> CacheStore:
        if request.param == "memory":
            return MemoryCacheStore(1 << 20, max_entry_bytes, ttl_s)
        url = request.getfixturevalue("redis_server").url
        return RedisCacheStore(url, max_entry_bytes, ttl_s, namespace=f"t{uuid.uuid4().hex[:10]}:")

    return make


def test_values_come_back_in_the_order_asked_and_misses_are_none(make_store: object) -> None:
    async def scenario() -> list[bytes | None]:
        store = make_store()  # type: ignore[operator]
        try:
            assert await store.put_many([("a", b"1"), ("b", b"\x00two")]) == 2
            return list(await store.get_many(["b", "nope", "a"]))
        finally:
            await store.close()

    assert run(scenario()) == [b"\x00two", None, b"1"]


def test_an_entry_over_max_entry_bytes_is_not_stored(make_store: object) -> None:
    async def scenario() -> tuple[int, list[bytes | None]]:
        store = make_store(max_entry_bytes=10)  # type: ignore[operator]
        try:
            stored = await store.put_many([("big", b"x" * 11), ("small", b"x" * 10)])
            return stored, list(await store.get_many(["big", "small"]))
        finally:
            await store.close()

    assert run(scenario()) == (1, [None, b"x" * 10])


def test_an_entry_expires_after_its_ttl(make_store: object) -> None:
    async def scenario() -> list[bytes | None]:
        store = make_store(ttl_s=0.05)  # type: ignore[operator]
        try:
            await store.put_many([("k", b"v")])
            assert await store.get_many(["k"]) == [b"v"]
            deadline = asyncio.get_running_loop().time() + 5
            while asyncio.get_running_loop().time() < deadline:
                got = await store.get_many(["k"])
                if got == [None]:
                    return got
                await asyncio.sleep(0.02)
            return await store.get_many(["k"])
        finally:
            await store.close()

    assert run(scenario()) == [None]


def test_memory_store_never_holds_more_than_max_bytes_and_drops_the_least_recently_used() -> None:
    store = MemoryCacheStore(max_bytes=4096, max_entry_bytes=1024, ttl_s=60)
    for i in range(200):
        store.put(f"k{i}", bytes(500))
        assert store.size() <= 4096
        if i >= 1:
            store.get("k0")  # kept in use: never the one to go
    assert store.get("k0") is not None
    assert store.get("k1") is None and store.get("k199") is not None
    assert 0 < len(store) < 200


def test_redis_down_is_a_miss_and_a_skipped_store() -> None:
    async def scenario() -> tuple[int, list[bytes | None]]:
        store = RedisCacheStore("redis://127.0.0.1:1/0", 100, 60, timeout_s=0.2)
        try:
            return await store.put_many([("k", b"v")]), list(await store.get_many(["k"]))
        finally:
            await store.close()

    assert run(scenario()) == (0, [None])


def test_redis_down_is_not_asked_again_at_once() -> None:
    async def scenario() -> int:
        store = RedisCacheStore("redis://127.0.0.1:1/0", 100, 60, timeout_s=0.2)
        try:
            for _ in range(5):
                await store.get_many(["k"])
            return store.errors
        finally:
            await store.close()

    assert run(scenario()) == 1  # one failed try, then misses without a round trip
