"""What one request's limits cost the gateway's process: CPU µs per admission and settlement, with every
limit on (per-key, per-address and global requests per minute, per-key and global tokens, a concurrency
slot), in memory and on a real Redis, at concurrency 1 and 64 (issue 12).

    .venv/bin/python -m bench.limiter_cost [--requests 4000] [--redis] [--calls]

Prints `| store | concurrency | CPU µs per request | script calls per request |`; the calls (Redis
round trips) are counted by Redis itself (INFO commandstats), for the measured requests only.

--calls measures instead what one script call of one admission costs the calling process, by each
way of making it (one after another, every limit on, the ways alternated round by round): redis-py's
`Script` through its pool (the way before issue 12's second round), `execute_command("EVALSHA", ...)`
through the pool, one held connection with redis-py packing each command, the held connection with the
command packed from cached bytes and no write timeout (the shipped way, `adapters/limit_redis.py`),
and, as the floor no client goes below, the same bytes through a bare asyncio protocol (no reply
parsing, no timeout).

Settling is the gateway's way: `settle_later` where the store has it (on Redis the settlement rides
on the next admission), else an awaited `settle`. Runs against whichever `corral` is importable, so
the same script measures a tree before a change and after it (PYTHONPATH=/path/to/old/tree). Stores
without one-step `admit` are driven the way their guard drove them: check the request scopes, reserve
tokens, take the slot; then charge and release.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from typing import Any

from corral.adapters.limits import LimitStore, Scope

REQUESTS = [Scope("key:bench", 10**9), Scope("ip:127.0.0.1", 10**9), Scope("global", 10**9)]
TOKENS = [Scope("tokens:key:bench", 10**12), Scope("tokens:global", 10**12)]
SLOT = "concurrency:key:bench"


async def one(store: Any) -> None:
    if hasattr(store, "settle_later"):  # the gateway's way since the settlement rides on the next admission
        admission = await store.admit(REQUESTS, TOKENS, 512, SLOT, 10**6)
        assert admission.refused is None and admission.decision.store_error is None, admission
        store.settle_later(admission.tokens, 300, admission.slot)
        return
    if hasattr(store, "admit"):
        admission = await store.admit(REQUESTS, TOKENS, 512, SLOT, 10**6)
        assert admission.refused is None and admission.decision.store_error is None, admission
        assert await store.settle(admission.tokens, 300, admission.slot) is None
        return
    assert (await store.check_request(REQUESTS)).allowed
    reservation = await store.reserve_tokens(TOKENS, 512)
    assert (await store.acquire(SLOT, 10**6)).allowed
    await store.charge_tokens(reservation, 300)
    await store.release(SLOT)


def script_calls(uri: str) -> int:
    """EVALSHA and EVAL calls Redis has run so far (0 in memory)."""
    if not uri.startswith("redis"):
        return 0
    import redis

    with redis.Redis.from_url(uri) as admin:
        stats = admin.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def measure(uri: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs, script calls) per request."""
    store = LimitStore(uri, namespace="bench" + uuid.uuid4().hex[:8])
    for _ in range(50):
        await one(store)  # warm: the script loaded, connections open
    await asyncio.sleep(0.1)  # the warm-up's last settlement sent on its own, before counting
    calls = script_calls(uri)
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one(store)

    began = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await store.close()  # counted: it sends the settlements still waiting
    used = time.process_time() - began
    return used / requests * 1e6, (script_calls(uri) - calls) / requests


class _Bare(asyncio.Protocol):
    """The floor: write the bytes, wake on the first reply bytes (enough for a one-packet reply)."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


async def call_costs(url: str, calls: int, rounds: int) -> dict[str, list[float]]:
    """CPU µs per script call of one admission (every limit on), by way of calling."""
    import redis.asyncio as aioredis

    from corral.adapters import limit_redis
    from corral.adapters.limit_script import SCRIPT

    store = LimitStore(url, namespace="calls" + uuid.uuid4().hex[:8])
    plan, slot = store.plan(REQUESTS, TOKENS, 512), "calls:conc:bench"
    keys = [w.name for w in plan] + [slot]
    args: list[Any] = [900, 0, 1, len(plan), 1, 10**9]
    for w in plan:
        args += [w.amount, w.seconds, w.cost, w.group]
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=128, timeout=0.5, socket_timeout=0.5)
    client = aioredis.Redis.from_pool(pool)
    script = client.register_script(SCRIPT)
    sha = await client.script_load(SCRIPT)
    held = await aioredis.ConnectionPool.from_url(url, socket_timeout=0.5).get_connection()  # type: ignore[no-untyped-call]
    bare_pool = aioredis.ConnectionPool.from_url(url, socket_timeout=None)
    lean = await bare_pool.get_connection()  # type: ignore[no-untyped-call]
    loop = asyncio.get_running_loop()
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    transport, bare = await loop.create_connection(_Bare, host, int(port))
    command = limit_redis.pack([(plan, slot, 10**9, loop.create_future())], [], 900)

    async def via_script() -> None:
        await script(keys=keys, args=args)

    async def via_execute() -> None:
        await client.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    async def via_held() -> None:
        await held.send_command("EVALSHA", sha, len(keys), *keys, *args, check_health=False)
        await held.read_response()

    async def via_lean() -> None:
        await lean.send_packed_command(command, check_health=False)
        await lean.read_response(timeout=0.5)

    async def via_bare() -> None:
        bare.waiter = loop.create_future()
        transport.write(command)
        await bare.waiter

    ways = {
        "Script, pooled": via_script,
        "execute_command, pooled": via_execute,
        "held connection, redis-py packs": via_held,
        "held connection, cached bytes (shipped)": via_lean,
        "bare asyncio protocol (floor)": via_bare,
    }
    out: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            for _ in range(100):
                await way()
            began = time.process_time()
            for _ in range(calls):
                await way()
            out[name].append((time.process_time() - began) / calls * 1e6)
    transport.close()
    await held.disconnect()
    await bare_pool.aclose()
    await client.aclose()
    await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", action="store_true", help="also on a real Redis (redis-server from Debian)")
    parser.add_argument("--calls", action="store_true", help="the cost of one script call, by way of calling")
    args = parser.parse_args()
    if args.calls:
        from tests.contract.servers import start_redis

        with start_redis() as server:
            costs = asyncio.run(call_costs(server.url, args.requests, args.rounds))
        print("| way | CPU µs per call (each round) | median |\n|---|---|---|")
        for name, runs in costs.items():
            print(f"| {name} | {', '.join(f'{r:.0f}' for r in runs)} | {statistics.median(runs):.0f} |")
        return
    uris = {"memory": "memory://"}
    with contextlib.ExitStack() as stack:
        if args.redis:
            from tests.contract.servers import start_redis

            # Held by the stack: a context manager left unreferenced is collected, and its clean-up
            # stops the server (the Redis rows then measured refused connections, allowed by policy).
            uris["redis"] = stack.enter_context(start_redis()).url
        for name, uri in uris.items():
            for c in (1, 64):
                runs = [asyncio.run(measure(uri, args.requests, c)) for _ in range(args.rounds)]
                cpu, calls = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
                per = f"{calls:.3f}" if name == "redis" else "—"
                print(f"| {name} | {c} | {cpu:.1f} | {per} |", flush=True)


if __name__ == "__main__":
    main()
