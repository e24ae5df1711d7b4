"""Ollama's scheduler, as the simulated node follows it (ollama-api.md §7.2, fleet-model.md §1).

- A request for a loaded model with the same load-time options attaches at once (the fast path) and
  waits for one of the runner's `parallel` slots in FIFO order, unbounded.
- Anything else (a load, a reload for changed options) waits in the pending queue, bounded by
  `max_queue`: beyond it, 503. Loads are serialised; requests for a loading model share its load.
- At `max_loaded` runners, one is evicted: the idle one with the shortest keep-alive first (ties by
  name); if none is idle, the first in that order, after its requests drain.
- When a runner goes idle, it expires after its keep-alive (the last request's value wins); 0 unloads
  at once; negative keeps it forever.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from corral.sim.catalog import ModelInfo

FOREVER = float("inf")


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class Runner:
    info: ModelInfo
    options_key: str
    parallel: int
    num_ctx: int
    session_s: float
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    slots: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)
    ref: int = 0
    expires_at: float = FOREVER  # unix seconds
    unloading: bool = False
    timer: asyncio.TimerHandle | None = None
    active: int = 0

    @property
    def name(self) -> str:
        return self.info.name


class Scheduler:
    def __init__(self, max_loaded: int, parallel: int, max_queue: int, load_seconds: float) -> None:
        self.max_loaded = max_loaded
        self.parallel = parallel
        self.max_queue = max_queue
        self.load_seconds = load_seconds
        self.runners: dict[str, Runner] = {}
        self.pending = 0
        self._load_lock = asyncio.Lock()
        self.loads = 0
        self.evictions = 0

    def _attach(self, runner: Runner, session_s: float) -> Runner:
        runner.ref += 1
        runner.idle.clear()
        runner.session_s = session_s
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        runner.expires_at = time.time() + (session_s if session_s >= 0 else 292 * 365 * 86400)
        return runner

    async def acquire(self, info: ModelInfo, options_key: str, num_ctx: int, session_s: float) -> tuple[Runner, float]:
        """Attach to a runner for the model, loading it if needed. Returns it and the seconds spent
        waiting for the load (the request's load_duration)."""
        started = time.monotonic()
        runner = self.runners.get(info.name)
        if runner is not None and runner.options_key == options_key and not runner.unloading:
            self._attach(runner, session_s)
            await runner.loaded.wait()
            return runner, time.monotonic() - started
        if self.pending >= self.max_queue:
            raise QueueFull
        self.pending += 1
        try:
            async with self._load_lock:
                runner = self.runners.get(info.name)
                if runner is not None and runner.options_key == options_key and not runner.unloading:
                    self._attach(runner, session_s)
                else:
                    if runner is not None:  # same model, other load-time options: reload
                        await self._unload_when_idle(runner)
                    while len(self.runners) >= self.max_loaded:
                        await self._unload_when_idle(self._victim())
                    parallel = 1 if info.embedding else self.parallel
                    runner = Runner(info, options_key, parallel, num_ctx, session_s, slots=asyncio.Semaphore(parallel))
                    self.runners[info.name] = runner
                    self._attach(runner, session_s)
                    await asyncio.sleep(self.load_seconds)
                    self.loads += 1
                    runner.loaded.set()
            await runner.loaded.wait()
            return runner, time.monotonic() - started
        finally:
            self.pending -= 1

    def _victim(self) -> Runner:
        ordered = sorted(self.runners.values(), key=lambda r: (r.session_s if r.session_s >= 0 else FOREVER, r.name))
        for runner in ordered:
            if runner.ref == 0:
                return runner
        return ordered[0]

    async def _unload_when_idle(self, runner: Runner) -> None:
        runner.session_s = 0
        runner.unloading = True
        if runner.ref > 0:
            await runner.idle.wait()
        self._unload(runner)
        self.evictions += 1

    def _unload(self, runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        if self.runners.get(runner.name) is runner:
            del self.runners[runner.name]

    def release(self, runner: Runner) -> None:
        runner.ref -= 1
        if runner.ref > 0:
            return
        runner.idle.set()
        if runner.unloading:
            return
        if runner.session_s == 0:
            self._unload(runner)
        elif runner.session_s > 0:
            runner.expires_at = time.time() + runner.session_s
            runner.timer = asyncio.get_running_loop().call_later(runner.session_s, self._expire, runner)
        else:
            runner.expires_at = time.time() + 292 * 365 * 86400

    def _expire(self, runner: Runner) -> None:
        runner.timer = None
        if runner.ref == 0:
            self._unload(runner)

    def unload_now(self, name: str) -> None:
        """keep_alive 0 with an empty prompt: unload as soon as the runner is idle."""
        runner = self.runners.get(name)
        if runner is None:
            return
        runner.session_s = 0
        if runner.ref == 0:
            self._unload(runner)
