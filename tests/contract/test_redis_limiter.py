"""The Redis limiter's calls (`adapters/limit_redis.py`), on a real redis-server: the admissions of one
moment share one script call, each still answered on its own and in arrival order; a call that hangs
or fails answers everyone in it by the `on_store_error` policy, and the next call works again."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from corral.adapters.limit_redis import BATCH_MAX
from corral.adapters.limits import Decision, LimitStore, Scope

from .servers import Server, run, start_redis


@pytest.fixture
def admin(redis_server: Server) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def evalsha(admin: redis.Redis) -> int:
    """Script calls Redis has run since the last CONFIG RESETSTAT (counted by Redis, not by us)."""
    return int(admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def new_store(url: str, **kw: object) -> LimitStore:
    return LimitStore(url, namespace="t" + uuid.uuid4().hex[:10], **{"timeout_s": 5.0, **kw})  # type: ignore[arg-type]


def test_admissions_of_one_moment_share_one_call_each_answered_in_arrival_order(
    redis_server: Server, admin: redis.Redis
) -> None:
    async def body() -> None:
        store = new_store(redis_server.url)
        await store.check_request([Scope("warm", 10)])  # loads the script
        admin.config_resetstat()
        decisions = await asyncio.gather(*(store.check_request([Scope("key:a", 10)]) for _ in range(50)))
        assert evalsha(admin) == 1  # 50 admissions, one round trip
        # Each got its own answer, in the order the requests came: the first ten in, the rest refused.
        assert [d.allowed for d in decisions] == [True] * 10 + [False] * 40
        assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
        assert all(d.store_error is None and d.scope == "key:a" for d in decisions)
        await store.close()

    run(body())


def test_more_admissions_than_a_call_holds_go_in_as_few_calls_as_fit(redis_server: Server, admin: redis.Redis) -> None:
    async def body() -> None:
        store = new_store(redis_server.url)
        await store.check_request([Scope("warm", 10)])
        admin.config_resetstat()
        count = 2 * BATCH_MAX + 44
        decisions = await asyncio.gather(*(store.check_request([Scope("key:a", 1000)]) for _ in range(count)))
        assert all(d.allowed for d in decisions)
        assert evalsha(admin) == 3
        # Counted once each: the 301st sees 1000 - count left.
        assert (await store.check_request([Scope("key:a", 1000)])).remaining == 1000 - count - 1
        await store.close()

    run(body())


def test_all_or_nothing_holds_for_each_admission_inside_one_call(redis_server: Server, admin: redis.Redis) -> None:
    async def body() -> None:
        store = new_store(redis_server.url)
        await store.check_request([Scope("warm", 10)])
        admin.config_resetstat()
        glob = Scope("global", 3)
        keys = ["key:a", "key:b"] * 4
        decisions = await asyncio.gather(*(store.check_request([Scope(k, 10), glob]) for k in keys))
        assert evalsha(admin) == 1
        assert [d.allowed for d in decisions] == [True] * 3 + [False] * 5
        assert all(d.scope == "global" for d in decisions[3:])
        # The refused ones charged nothing to their keys: key:b was admitted once, so 9 are left.
        alone = [await store.check_request([Scope("key:b", 10)]) for _ in range(10)]
        assert [d.allowed for d in alone] == [True] * 9 + [False]
        await store.close()

    run(body())


def test_a_waiter_gone_before_its_answer_gives_its_slot_back(redis_server: Server) -> None:
    async def body() -> None:
        store = new_store(redis_server.url)
        rpm, tpm, slot = [Scope("key:a", 100)], [Scope("tokens:key:a", 1000)], "concurrency:key:a"
        await store.check_request([Scope("warm", 10)])
        task = asyncio.create_task(store.admit(rpm, tpm, 800, slot, 1))
        await asyncio.sleep(0)  # the admission is queued; the call goes out on the next tick
        task.cancel()  # the client went away; Redis still admits it, and the store gives it back
        with pytest.raises(asyncio.CancelledError):
            await task
        second = await store.admit(rpm, tpm, 900, slot, 1)  # needs the slot and the 800 tokens back
        assert second.refused is None and second.tokens is not None
        assert second.tokens.decision.remaining == 100
        await store.close()

    run(body())


def test_a_waiter_gone_just_after_its_answer_gives_its_slot_back(redis_server: Server) -> None:
    # Three admissions in one call, answered in order: the first one's task runs on before the others
    # resume and cancels them (their clients went away in that same moment), so their answers are set
    # but never taken. Their slots must come back all the same.
    async def body() -> None:
        store = new_store(redis_server.url)
        others: list[asyncio.Task[Decision]] = []

        async def leader() -> Decision:
            decision = await store.acquire("concurrency:c", 3)
            for task in others:
                task.cancel()
            return decision

        first = asyncio.create_task(leader())
        others += [asyncio.create_task(store.acquire("concurrency:c", 3)) for _ in range(2)]
        assert (await first).allowed
        for task in others:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await store.release("concurrency:c") is None
        again = [await store.acquire("concurrency:c", 3) for _ in range(3)]
        assert [d.allowed for d in again] == [True, True, True]
        await store.close()

    run(body())


def test_a_backlog_of_settlements_goes_out_over_several_calls(redis_server: Server, admin: redis.Redis) -> None:
    # Settlements pile up while a call is out (Redis stalled): they then go at most 256 to a call, so
    # one script never holds Redis for a whole backlog, and every one of them is applied.
    async def body() -> None:
        store = new_store(redis_server.url)
        taken = await asyncio.gather(*(store.acquire("concurrency:c", 600) for _ in range(600)))
        assert all(d.allowed for d in taken)
        admin.config_resetstat()
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            out = asyncio.create_task(store.check_request([Scope("key:a", 10)]))
            while store._remote is not None and (
                store._remote._sender is None or store._remote._queue
            ):  # the call is out
                await asyncio.sleep(0.01)
            for _ in range(600):
                store.settle_later(None, 0, "concurrency:c")
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        assert (await out).store_error is None
        while store._remote is not None and (store._remote.settlements_waiting or store._remote._sender):
            await asyncio.sleep(0.01)
        assert evalsha(admin) == 1 + 3  # the admission, then 256 + 256 + 88 settlements
        again = await asyncio.gather(*(store.acquire("concurrency:c", 600) for _ in range(600)))
        assert all(d.allowed for d in again)
        await store.close()

    run(body())


def test_the_script_is_loaded_again_when_the_server_forgot_it(redis_server: Server, admin: redis.Redis) -> None:
    async def body() -> None:
        store = new_store(redis_server.url)
        assert (await store.check_request([Scope("key:a", 10)])).remaining == 9
        admin.script_flush()
        decision = await store.check_request([Scope("key:a", 10)])
        assert decision.store_error is None and decision.remaining == 8
        await store.close()

    run(body())


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_a_call_redis_does_not_answer_follows_the_policy_then_the_next_call_works(policy: str) -> None:
    with start_redis() as server:

        async def body() -> None:
            store = LimitStore(server.url, on_store_error=policy, timeout_s=0.5)
            assert (await store.check_request([Scope("warm", 10)])).allowed
            server.proc.send_signal(signal.SIGSTOP)  # Redis hangs: the call goes out and no answer comes
            try:
                began = time.monotonic()
                decisions: list[Decision] = await asyncio.gather(
                    *(store.check_request([Scope("key:a", 10)]) for _ in range(20))
                )
                waited = time.monotonic() - began
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert all(d.allowed is (policy == "allow") and d.store_error for d in decisions)
            assert "within 0.5 s" in str(decisions[0].store_error)
            assert waited < 5
            # Admissions queued behind a call that gets no answer get theirs when it times out, not
            # after a call of their own that could not be answered either.
            server.proc.send_signal(signal.SIGSTOP)
            try:
                began = time.monotonic()
                out = [asyncio.create_task(store.check_request([Scope("key:a", 10)])) for _ in range(3)]
                while store._remote is not None and (
                    store._remote._sender is None or store._remote._queue
                ):  # the call is out
                    await asyncio.sleep(0.01)
                queued = [asyncio.create_task(store.check_request([Scope("key:a", 10)])) for _ in range(3)]
                late = await asyncio.gather(*out, *queued)
                waited = time.monotonic() - began
            finally:
                server.proc.send_signal(signal.SIGCONT)
            assert all(d.store_error for d in late)
            assert waited < 5
            # The late answer is not taken for the next one: a fresh connection, fresh answers.
            after = [await store.check_request([Scope("key:b", 3)]) for _ in range(4)]
            assert [d.store_error for d in after] == [None] * 4
            assert [d.allowed for d in after] == [True, True, True, False]
            await store.close()

        run(body())


def test_redis_gone_while_admissions_wait_answers_each_by_the_policy() -> None:
    with start_redis() as server:

        async def body() -> None:
            store = LimitStore(server.url, on_store_error="deny", timeout_s=0.5)
            assert (await store.check_request([Scope("warm", 10)])).allowed
            server.proc.send_signal(signal.SIGSTOP)
            pending = [asyncio.create_task(store.check_request([Scope("key:a", 10)])) for _ in range(30)]
            await asyncio.sleep(0)
            server.kill()  # gone with the call out (SIGKILL ends a stopped process too)
            decisions = await asyncio.gather(*pending)
            assert all(not d.allowed and d.store_error for d in decisions)
            assert (await store.check_request([Scope("key:a", 10)])).store_error  # and it stays gone
            assert not await store.check()
            await store.close()

        run(body())
