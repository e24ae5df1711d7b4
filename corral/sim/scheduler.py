"""Ollama's scheduler, as the simulated node follows it (ollama-api.md §7.2, fleet-model.md §1.2-1.5).

- A request for a loaded (or loading) runner whose load-time options match attaches at once (the fast
  path), shares its load, and then waits FIFO, without bound, for one of the runner's `parallel` slots.
- Anything else (a first load, a reload for other options) waits in the pending queue, bounded by
  `max_queue` (beyond it: QueueFull, a 503). That queue is served one request at a time and loads are
  serialised, as in processPending.
- At `max_loaded` runners one is evicted: the idle one with the shortest keep-alive first (ties by name);
  if none is idle, the first in that order once its requests drain. A runner being evicted takes no new
  requests; they queue for a fresh load. (Real Ollama keeps attaching them, which can starve the queue.)
- A runner that goes idle expires after its keep-alive: the last value a request sent wins, and a request
  without one leaves it as it is (the default applies only to a fresh load: server/sched.go sets
  sessionDuration in load() from OLLAMA_KEEP_ALIVE, and useLoadedRunner changes it only when the request
  has one); 0 unloads at once; negative keeps it forever. Unloading does not model Ollama's wait for VRAM to recover.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from corral.sim.catalog import ModelInfo
from corral.sim.params import needs_reload
from corral.sim.prompt_cache import SlotCache

LoadKey = tuple[tuple[str, Any], ...]
FOREVER_S = 292 * 365 * 86400  # math.MaxInt64 nanoseconds, as /api/ps shows a keep_alive of -1


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class Runner:
    info: ModelInfo
    key: LoadKey
    parallel: int
    session_s: float
    slots: asyncio.Semaphore
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    ref: int = 0
    evicting: bool = False
    expires_at: float = 0.0  # unix seconds
    timer: asyncio.TimerHandle | None = None
    loading: asyncio.Task[None] | None = None
    multiuser: bool = False
    # The slots' prompt cache lives and dies with the runner: an unload or a reload starts empty.
    cache: SlotCache = field(init=False)

    def __post_init__(self) -> None:
        self.cache = SlotCache(self.parallel, self.num_ctx, self.multiuser)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_ctx(self) -> int:
        return int(dict(self.key)["num_ctx"])

    def estimate_expiry(self) -> None:
        self.expires_at = time.time() + (FOREVER_S if self.session_s < 0 else self.session_s)


class Scheduler:
    def __init__(
        self,
        max_loaded: int,
        parallel: int,
        max_queue: int,
        load_seconds: float,
        default_session_s: float = 300.0,
        multiuser_cache: bool = False,
    ) -> None:
        self.default_session_s = default_session_s  # OLLAMA_KEEP_ALIVE, for a load by a request without one
        self.max_loaded = max(1, max_loaded)
        self.parallel = max(1, parallel)
        self.max_queue = max_queue
        self.load_seconds = load_seconds
        self.runners: dict[str, Runner] = {}
        self.multiuser_cache = multiuser_cache  # how slots are chosen for their prompt cache
        self.pending = 0
        self.loads = self.evictions = self.reloads = self.unloads = 0
        self._lock = asyncio.Lock()
        self._loading: asyncio.Task[None] | None = None

    def reset_counters(self) -> None:
        self.loads = self.evictions = self.reloads = self.unloads = 0

    def _usable(self, runner: Runner | None, key: LoadKey) -> bool:
        return runner is not None and not runner.evicting and not needs_reload(runner.key, key)

    async def acquire(self, info: ModelInfo, key: LoadKey, session_s: float | None) -> Runner:
        """Attach to a ready runner for the model, loading it if needed. Pair with release(). `session_s`
        None: the request sent no keep_alive."""
        runner = self.runners.get(info.name)
        if runner is not None and self._usable(runner, key):
            self._attach(runner, session_s)
        else:
            if self.pending >= self.max_queue:
                raise QueueFull
            self.pending += 1
            queued = True
            try:
                async with self._lock:
                    self.pending -= 1
                    queued = False
                    runner = await self._schedule(info, key, session_s)
                    if runner.loading is not None:
                        try:  # hold the queue until the load is done: loads are serialised
                            await asyncio.shield(runner.loading)
                        except asyncio.CancelledError:
                            self.release(runner)
                            raise
            finally:
                if queued:
                    self.pending -= 1
        try:
            await runner.ready.wait()
        except asyncio.CancelledError:
            self.release(runner)
            raise
        return runner

    async def _schedule(self, info: ModelInfo, key: LoadKey, session_s: float | None) -> Runner:
        if self._loading is not None and not self._loading.done():
            await asyncio.shield(self._loading)  # a cancelled predecessor's load is still running
        runner = self.runners.get(info.name)
        if runner is not None and self._usable(runner, key):
            return self._attach(runner, session_s)
        if runner is not None:
            self.reloads += 1
            await self._drain_and_unload(runner)
        while len(self.runners) >= self.max_loaded:
            self.evictions += 1
            await self._drain_and_unload(self._victim())
        parallel = 1 if info.embedding else self.parallel
        first = self.default_session_s if session_s is None else session_s
        runner = Runner(info, key, parallel, first, asyncio.Semaphore(parallel), multiuser=self.multiuser_cache)
        self.runners[info.name] = runner
        self._attach(runner, session_s)
        runner.loading = self._loading = asyncio.get_running_loop().create_task(self._load(runner))
        return runner

    async def _load(self, runner: Runner) -> None:
        await asyncio.sleep(self.load_seconds)
        self.loads += 1
        runner.loading = None
        runner.ready.set()
        if runner.ref == 0:  # everyone who wanted it left during the load
            self._went_idle(runner)

    def _victim(self) -> Runner:
        # Ollama's order: shortest keep-alive first, then the model's blob path, i.e. its digest.
        ordered = sorted(
            self.runners.values(), key=lambda r: (r.session_s if r.session_s >= 0 else float("inf"), r.info.digest)
        )
        return next((r for r in ordered if r.ref == 0), ordered[0])

    async def _drain_and_unload(self, runner: Runner) -> None:
        runner.evicting = True
        runner.session_s = 0
        if runner.ref == 0 and runner.ready.is_set():
            self._unload(runner)
        await runner.gone.wait()

    def _attach(self, runner: Runner, session_s: float | None) -> Runner:
        runner.ref += 1
        if session_s is not None:
            runner.session_s = session_s
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        runner.estimate_expiry()
        return runner

    def release(self, runner: Runner) -> None:
        runner.ref -= 1
        if runner.ref == 0 and runner.ready.is_set():
            self._went_idle(runner)

    def _went_idle(self, runner: Runner) -> None:
        if runner.evicting or runner.session_s == 0:
            self._unload(runner)
            return
        runner.estimate_expiry()
        if runner.session_s > 0:
            runner.timer = asyncio.get_running_loop().call_later(runner.session_s, self._expire, runner)

    def _expire(self, runner: Runner) -> None:
        runner.timer = None
        if runner.ref == 0:
            self._unload(runner)

    def _unload(self, runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        if self.runners.get(runner.name) is runner:
            del self.runners[runner.name]
            self.unloads += 1
        runner.gone.set()

    def unload_now(self, name: str) -> None:
        """keep_alive 0 with an empty prompt, or a deleted model: unload as soon as the runner is idle."""
        runner = self.runners.get(name)
        if runner is None:
            return
        runner.session_s = 0
        if runner.ref == 0 and runner.ready.is_set():
            self._unload(runner)
