"""A small load driver for the HA test: several concurrent clients sending a steady mix of streamed and
whole generations through the front, each request recorded with its wall-clock start and end (so the
test can prove from timestamps which failures were in flight at a given instant)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Outcome:
    request_id: str
    stream: bool
    start: float  # time.time()
    end: float
    status: int  # 0: no HTTP answer at all
    result: str  # "ok", "failed" (no usable answer), "cut" (a stream that began and broke off)
    detail: str = ""


@dataclass
class Load:
    url: str
    key: str
    clients: int = 6
    num_predict: int = 30
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the load driver did not stop"

    def count(self) -> int:
        return len(self.outcomes)

    async def _run(self) -> None:
        # A connection per request: a request sent on a kept-alive connection that HAProxy closes at that
        # moment (after a replica died under it) fails in the client before reaching any replica, the
        # HTTP keep-alive race every proxy has; it says nothing of Corral's failover.
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await asyncio.gather(*(self._client(client, i) for i in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, index: int) -> None:
        stream = index % 2 == 0  # half the clients stream, half do not
        while not self._stop.is_set():
            request_id = f"load-{next(self._ids)}"
            body: dict[str, Any] = {
                "model": "m:1b",
                "prompt": "hello",
                "stream": stream,
                "options": {"num_predict": self.num_predict},
            }
            headers = {"authorization": f"Bearer {self.key}", "x-request-id": request_id}
            start = time.time()
            try:
                outcome = await self._one(client, request_id, stream, body, headers, start)
            except httpx.HTTPError as exc:
                outcome = Outcome(request_id, stream, start, time.time(), 0, "failed", repr(exc))
            self.outcomes.append(outcome)

    async def _one(
        self,
        client: httpx.AsyncClient,
        request_id: str,
        stream: bool,
        body: dict[str, Any],
        headers: dict[str, str],
        start: float,
    ) -> Outcome:
        async with client.stream("POST", self.url + "/api/generate", json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:200]
                return Outcome(request_id, stream, start, time.time(), response.status_code, "failed", text)
            last: Any = None
            began = False
            try:
                async for line in response.aiter_lines():
                    if line:
                        began = True
                        last = orjson.loads(line)
            except httpx.HTTPError as exc:
                # The connection broke during the body: a stream that had begun was cut mid-way.
                result = "cut" if stream and began else "failed"
                return Outcome(request_id, stream, start, time.time(), 200, result, repr(exc))
        done = isinstance(last, dict) and last.get("done") is True and "error" not in last
        if done:
            return Outcome(request_id, stream, start, time.time(), 200, "ok")
        result = "cut" if stream and began else "failed"
        return Outcome(request_id, stream, start, time.time(), 200, result, str(last)[:200])


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    out = {"sent": len(outcomes)}
    for kind, stream in (("stream", True), ("whole", False)):
        mine = [o for o in outcomes if o.stream is stream]
        out[f"{kind}_sent"] = len(mine)
        for result in ("ok", "failed", "cut"):
            if result == "cut" and not stream:
                continue
            out[f"{kind}_{result}"] = sum(o.result == result for o in mine)
    return out
