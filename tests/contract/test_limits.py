"""One suite over every LimitStore: in memory and on a real Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.adapters.limits import Decision, LimitStore, Scope

from .servers import Server, run, start_redis


@pytest.fixture(params=["memory", "redis"])
def uri(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_server").url)


def store_for(uri: str, **kw: str) -> LimitStore:
    # A generous Redis timeout: these tests count admissions, and on a loaded 2-core machine a connect
    # can take longer than the 0.5 s default (the timeout's own behaviour is tested with its own value).
    return LimitStore(uri, namespace="t" + uuid.uuid4().hex[:10], **{"timeout_s": 5.0, **kw})  # type: ignore[arg-type]


def test_concurrent_attempts_admit_exactly_the_limit(uri: str) -> None:
    async def body() -> None:
        store = store_for(uri)
        decisions = await asyncio.gather(*(store.check_request([Scope("key:a", 10)]) for _ in range(50)))
        admitted = [d for d in decisions if d.allowed]
        assert len(admitted) == 10
        refused = next(d for d in decisions if not d.allowed)
        assert refused.store_error is None and refused.scope == "key:a"
        headers = refused.headers()
        assert headers["RateLimit-Limit"] == "10" and headers["RateLimit-Remaining"] == "0"
        assert 1 <= int(headers["Retry-After"]) <= 60 and 0 < int(headers["RateLimit-Reset"]) <= 60
        assert all(d.remaining is not None and 0 <= d.remaining < 10 for d in admitted)
        later = [await store.check_request([Scope("key:b", 3)]) for _ in range(3)]
        assert [d.remaining for d in later] == [2, 1, 0]
        await store.close()

    run(body())


def test_a_scope_that_refuses_uses_up_nothing_elsewhere(uri: str) -> None:
    async def body() -> None:
        store = store_for(uri)
        glob = Scope("global", 3)
        for _ in range(3):
            assert (await store.check_request([Scope("key:a", 5), glob])).allowed
        refused = await store.check_request([Scope("key:b", 5), glob])
        assert not refused.allowed and refused.scope == "global"
        # key:b was not charged for the refused request: alone, it still has its full 5.
        results = [await store.check_request([Scope("key:b", 5)]) for _ in range(6)]
        assert [d.allowed for d in results] == [True] * 5 + [False]
        await store.close()

    run(body())


def test_burst_caps_a_slice_of_the_minute(uri: str) -> None:
    async def body() -> None:
        store = store_for(uri)
        scope = Scope("ip:10.0.0.1", 60, burst=5)  # at most 5 in any 5 s
        results = [await store.check_request([scope]) for _ in range(7)]
        assert [d.allowed for d in results] == [True] * 5 + [False, False]
        assert results[5].retry_after_s is not None and results[5].retry_after_s <= 5.0
        assert results[5].limit == 5
        await store.close()

    run(body())


def test_tokens_admit_on_the_estimate_and_charge_the_actual(uri: str) -> None:
    async def body() -> None:
        store = store_for(uri)
        scopes = [Scope("key:a", 1000)]
        first = await store.reserve_tokens(scopes, 600)
        assert first.decision.allowed
        assert not (await store.reserve_tokens(scopes, 600)).decision.allowed
        assert await store.charge_tokens(first, 100) is None  # 500 given back
        second = await store.reserve_tokens(scopes, 600)
        assert second.decision.allowed and second.decision.remaining == 300
        assert await store.charge_tokens(second, 2000) is None  # used far more than estimated
        over = await store.reserve_tokens(scopes, 1)
        assert not over.decision.allowed and over.decision.headers()["RateLimit-Remaining"] == "0"
        # An estimate above the whole limit still gets in when the window is empty.
        assert (await store.reserve_tokens([Scope("key:b", 1000)], 5000)).decision.allowed
        await store.close()

    run(body())


def test_concurrency_slots(uri: str) -> None:
    async def body() -> None:
        store = store_for(uri)
        decisions = await asyncio.gather(*(store.acquire("key:a", 10) for _ in range(50)))
        assert sum(d.allowed for d in decisions) == 10
        refused = next(d for d in decisions if not d.allowed)
        assert refused.headers()["Retry-After"] == "1"
        for _ in range(10):
            assert await store.release("key:a") is None
        assert sum([(await store.acquire("key:a", 10)).allowed for _ in range(12)]) == 10
        assert (await store.acquire("key:b", 1)).allowed
        await store.close()

    run(body())


def test_two_stores_on_one_redis_admit_the_limit_together(redis_server: Server) -> None:
    url = redis_server.url
    namespace = "t" + uuid.uuid4().hex[:10]
    results: list[list[Decision]] = []
    start = threading.Barrier(2)

    def replica() -> None:
        async def body() -> list[Decision]:
            store = LimitStore(url, namespace=namespace, timeout_s=5.0)
            start.wait()
            out = list(await asyncio.gather(*(store.check_request([Scope("global", 25)]) for _ in range(40))))
            out += await asyncio.gather(*(store.acquire("key:a", 7) for _ in range(20)))
            await store.close()
            return out

        results.append(run(body()))

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2
    assert sum(d.allowed for r in results for d in r[:40]) == 25
    assert sum(d.allowed for r in results for d in r[40:]) == 7


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_redis_gone_mid_run_follows_the_policy(policy: str) -> None:
    with start_redis() as server:

        async def body() -> None:
            store = LimitStore(server.url, on_store_error=policy, timeout_s=0.5)
            scopes = [Scope("key:a", 100)]
            assert (await store.check_request(scopes)).allowed
            reservation = await store.reserve_tokens(scopes, 10)
            assert reservation.decision.allowed and (await store.acquire("key:a", 5)).allowed
            assert await store.check()
            server.kill()
            began = time.monotonic()
            for decision in [
                await store.check_request(scopes),
                (await store.reserve_tokens(scopes, 10)).decision,
                await store.acquire("key:a", 5),
            ]:
                assert decision.allowed is (policy == "allow")
                assert decision.store_error and decision.headers().get("RateLimit-Limit") is None
            assert await store.charge_tokens(reservation, 50) is not None
            assert await store.release("key:a") is not None
            assert not await store.check()
            assert time.monotonic() - began < 10
            await store.close()

        run(body())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 120), st.one_of(st.none(), st.integers(1, 150)), st.integers(0, 200))
def test_never_more_than_the_limit_or_the_burst(per_minute: int, burst: int | None, attempts: int) -> None:
    async def body() -> int:
        store = store_for("memory://")
        results = [await store.check_request([Scope("k", per_minute, burst)]) for _ in range(attempts)]
        return sum(d.allowed for d in results)

    cap = per_minute if burst is None or burst >= per_minute else burst
    assert run(body()) == min(attempts, cap)


def test_one_admission_checks_every_limit_at_once(uri: str) -> None:
    async def body() -> None:
        store = store_for(uri)
        rpm, tpm = [Scope("key:a", 100), Scope("global", 100)], [Scope("tokens:key:a", 1000)]
        first = await store.admit(rpm, tpm, 600, "concurrency:key:a", 2)
        assert first.refused is None and first.tokens is not None and first.slot == "concurrency:key:a"
        assert first.decision.limit == 100 and first.decision.remaining == 99
        assert first.tokens.decision.remaining == 400 and first.slots_used == 1
        # The tokens refuse the second: nothing is charged, not its request count nor a slot.
        second = await store.admit(rpm, tpm, 600, "concurrency:key:a", 2)
        assert second.refused == "token_limited" and second.decision.scope == "tokens:key:a"
        assert second.decision.headers()["Retry-After"]
        third = await store.admit(rpm, tpm, 100, "concurrency:key:a", 2)
        assert third.refused is None and third.decision.remaining == 98 and third.slots_used == 2
        # Both slots taken: the concurrency limit refuses, and again charges nothing.
        fourth = await store.admit(rpm, tpm, 1, "concurrency:key:a", 2)
        assert fourth.refused == "concurrency_limited" and fourth.decision.headers()["Retry-After"] == "1"
        # Settling frees a slot and gives back what the first reserved beyond its use, in one step.
        assert await store.settle(first.tokens, 100, first.slot) is None
        fifth = await store.admit(rpm, tpm, 400, "concurrency:key:a", 2)
        assert fifth.refused is None and fifth.decision.remaining == 97
        assert fifth.tokens is not None and fifth.tokens.decision.remaining == 400  # 1000 - 100 - 100 - 400
        await store.close()

    run(body())


def test_an_admission_is_one_round_trip_to_redis(redis_server: Server) -> None:
    import redis

    admin = redis.Redis.from_url(redis_server.url)

    def calls() -> dict[str, int]:
        stats = admin.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    async def body() -> None:
        store = store_for(redis_server.url)
        scopes, tokens = (
            [Scope("key:a", 1000, burst=100), Scope("ip:1", 1000), Scope("global", 1000)],
            [Scope("tokens:key:a", 10**6)],
        )
        await store.admit(scopes, tokens, 10, "concurrency:key:a", 5)  # loads the script once
        admin.config_resetstat()
        for _ in range(20):
            admission = await store.admit(scopes, tokens, 10, "concurrency:key:a", 5)
            assert admission.refused is None
            assert await store.settle(admission.tokens, 12, admission.slot) is None
        # Redis counts the commands a script runs too: those are the script's own, on the server.
        inside = {"hmget", "hset", "pexpire", "get", "incr", "expire", "decr", "del", "time"}
        sent = {name: n for name, n in calls().items() if name not in inside and not name.startswith("config")}
        assert sent == {"evalsha": 40}
        await store.close()

    run(body())
    admin.close()


def test_a_settlement_left_for_later_counts_before_the_next_admission(uri: str) -> None:
    """The gateway settles with `settle_later` (no round trip of its own on Redis): the slot it frees
    and the tokens it gives back are there for this store's very next admission."""

    async def body() -> None:
        store = store_for(uri)
        rpm, tpm, slot = [Scope("key:a", 100)], [Scope("tokens:key:a", 1000)], "concurrency:key:a"
        first = await store.admit(rpm, tpm, 600, slot, 1)
        assert first.refused is None and first.tokens is not None
        assert (await store.admit(rpm, tpm, 100, slot, 1)).refused == "concurrency_limited"
        store.settle_later(first.tokens, 100, first.slot)  # used 100 of the 600 reserved
        second = await store.admit(rpm, tpm, 900, slot, 1)  # needs the slot back and 500 tokens back
        assert second.refused is None and second.tokens is not None
        assert second.tokens.decision.remaining == 0  # 1000 - 100 - 900
        await store.close()

    run(body())


def test_settlements_left_for_later_ride_on_admissions_and_are_sent_alone_when_none_comes(
    redis_server: Server,
) -> None:
    import redis

    from corral.adapters.limits import SETTLE_LINGER_S

    admin = redis.Redis.from_url(redis_server.url)

    def evalsha() -> int:
        return int(admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    async def body() -> None:
        store = store_for(redis_server.url)
        scopes, tokens = [Scope("key:a", 1000), Scope("global", 1000)], [Scope("tokens:key:a", 10**6)]
        slot = "concurrency:key:a"
        await store.admit(scopes, tokens, 10, slot, 1)  # loads the script; holds the only slot
        admin.config_resetstat()
        admission = await store.admit(scopes, tokens, 10, slot, 1)
        assert admission.refused == "concurrency_limited"
        store.settle_later(None, 0, slot)  # the first request ends
        for _ in range(20):  # one request after another on one slot: each frees it for the next
            admission = await store.admit(scopes, tokens, 10, slot, 1)
            assert admission.refused is None and admission.tokens is not None
            store.settle_later(admission.tokens, 12, admission.slot)
        assert evalsha() == 21  # one round trip per request: the settlements rode on the admissions
        # The last settlement has no admission to ride on: it goes alone, within the linger.
        deadline = time.monotonic() + 5
        while evalsha() < 22 and time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_LINGER_S)
        assert evalsha() == 22
        assert (await store.admit(scopes, tokens, 10, slot, 1)).refused is None  # the slot is free
        store.settle_later(None, 0, slot)
        await store.close()  # sends what waits
        assert evalsha() == 24
        other = store_for(redis_server.url)
        other.namespace = store.namespace
        assert (await other.admit(scopes, tokens, 10, slot, 1)).refused is None
        await other.close()

    run(body())
    admin.close()


def test_many_concurrent_requests_wait_for_a_connection_rather_than_fail(uri: str) -> None:
    async def body() -> None:
        store = store_for(uri)
        scopes, tokens = [Scope("key:a", 10_000), Scope("global", 10_000)], [Scope("tokens:key:a", 10**6)]
        admissions = await asyncio.gather(
            *(store.admit(scopes, tokens, 5, "concurrency:key:a", 1000) for _ in range(400))
        )
        assert [a.decision.store_error for a in admissions if a.decision.store_error] == []
        assert all(a.refused is None for a in admissions)
        settled = await asyncio.gather(*(store.settle(a.tokens, 7, a.slot) for a in admissions))
        assert settled == [None] * 400
        await store.close()

    run(body())
