"""What one request's limits cost the gateway's process: CPU µs per admission and settlement, with every
limit on (per-key, per-address and global requests per minute, per-key and global tokens, a concurrency
slot), in memory and on a real Redis, at concurrency 1 and 64 (issue 12).

    .venv/bin/python -m bench.limiter_cost [--requests 4000] [--redis]

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


async def measure(uri: str, requests: int, concurrency: int) -> float:
    store = LimitStore(uri, namespace="bench" + uuid.uuid4().hex[:8])
    for _ in range(50):
        await one(store)  # warm: the script loaded, connections open
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
    return used / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", action="store_true", help="also on a real Redis (redis-server from Debian)")
    args = parser.parse_args()
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
                print(f"| {name} | {c} | {statistics.median(runs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
