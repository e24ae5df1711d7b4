"""A time-stepped model of a fleet of Ollama nodes (fleet-model.md §6(a)), in virtual time.

Per node: usable VRAM, OLLAMA_MAX_LOADED_MODELS, slots per model (OLLAMA_NUM_PARALLEL), the pending
queue of 512 and its 503, serialised loads (fixed cost + size / disk bandwidth, page cache hot or
cold), Ollama's eviction rule (shortest keep-alive, then name; idle first, else wait for the victim to
drain; then wait for its memory to come back before weighing the queue again), reload on changed
num_ctx, time-sharing of the GPU between busy runners, prefill then decode with the batching factor s,
and node failure.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class ModelSpec:
    name: str
    disk_gb: float
    tg1: float  # decode tokens/s, one sequence
    pp: float  # prefill tokens/s
    kv_kib: float  # KV cache per token
    embedding: bool = False  # an embedding model: a request is its prompt only, no output

    def vram_gb(self, num_ctx: int, slots: int) -> float:
        return self.disk_gb + self.kv_kib * 1024 * num_ctx * slots / GIB + 0.5


MODELS = (
    ModelSpec("llama3.2:1b", 1.3, 200, 8000, 32),
    ModelSpec("llama3.2:3b", 2.0, 150, 6000, 112),
    ModelSpec("qwen2.5:7b", 4.7, 120, 4500, 56),
    ModelSpec("llama3.1:8b", 4.9, 112, 4000, 128),
    ModelSpec("gemma2:9b", 5.5, 90, 3500, 336),
    ModelSpec("phi4:14b", 9.1, 60, 2500, 200),
)
# Every model a run may use, by name (generated scenarios register theirs: bench/policy_sim/generate.py).
SPECS: dict[str, ModelSpec] = {m.name: m for m in MODELS}


@dataclass
class Request:
    rid: int
    model: str
    num_ctx: int
    prompt: int
    output: int
    arrival: float
    attempts: int = 0
    node: int = -1
    first_token: float | None = None
    done_at: float | None = None
    failed: str | None = None
    prefill_left: float = 0.0
    decode_left: float = 0.0
    loaded_for: bool = False  # this request waited for a model load
    preload: bool = False  # sent by the residency controller, not a client: not in the figures
    # Multi-turn scenarios (bench/policy_sim/multiturn.py): the prompt as (segment id, tokens), one per
    # message, for the slots' prompt cache; empty: a prompt shares nothing and is evaluated whole.
    segments: tuple[tuple[int, int], ...] = ()
    turn: int = 0  # 1 for a conversation's first turn
    cached: int = 0  # prompt tokens its slot already held
    slot: int = -1
    sent_at: float | None = None  # when the gateway last sent it to a node


@dataclass(eq=False)
class Runner:
    spec: ModelSpec
    num_ctx: int
    slots: int
    vram: float
    ready_at: float  # loading until then
    active: list[Request] = field(default_factory=list)
    fifo: deque[Request] = field(default_factory=deque)
    session_s: float = 300.0
    idle_since: float | None = None
    unloading: bool = False
    # Per slot, the sequence it evaluated last (prompt and answer), and whether a request holds it.
    cache: list[tuple[tuple[int, int], ...]] = field(default_factory=list)
    taken: list[bool] = field(default_factory=list)
    used: list[int] = field(default_factory=list)  # when each slot was last taken (a counter)
    _clock: int = 0

    def take_slot(self, req: Request) -> None:
        """Give a request with segments an idle slot as llama-server (what Ollama runs) picks one: the
        slot whose cache shares the longest prefix with its prompt if that is over 10% of the prompt
        (--slot-prompt-similarity), else the least recently used; only the rest is evaluated."""
        if not self.cache:
            self.cache = [() for _ in range(self.slots)]
            self.taken = [False] * self.slots
            self.used = [0] * self.slots
        idle = [i for i in range(self.slots) if not self.taken[i]]
        shares = {i: _common(self.cache[i], req.segments) for i in idle}
        best = max(idle, key=lambda i: shares[i])
        if shares[best] <= 0.1 * req.prompt:
            best = min(idle, key=lambda i: self.used[i])
        self.taken[best] = True
        self._clock += 1
        self.used[best] = self._clock
        req.slot, req.cached = best, shares[best]
        req.prefill_left = float(max(1, req.prompt - shares[best]))  # at least the last token is evaluated

    def free_slot(self, req: Request) -> None:
        self.taken[req.slot] = False
        self.cache[req.slot] = (*req.segments, (req.segments[-1][0] + 1, req.output))

    @property
    def ref(self) -> int:
        return len(self.active) + len(self.fifo)


CAUSES = ("expired", "evicted", "num_ctx", "replica", "expired_fleet", "evicted_fleet", "first")


@dataclass
class LoadBook:
    """Fleet-wide, for the load causes only: which nodes hold each model, and how its last copy went."""

    holders: dict[str, set[int]] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)

    def cause(self, model: str) -> str:
        """Why a node that never held `model` loads it."""
        if self.holders.get(model):
            return "replica"
        gone = self.last.get(model)
        return "first" if gone is None else ("expired_fleet" if gone == "expired" else "evicted_fleet")

    def gone(self, model: str, node: int, cause: str) -> None:
        self.holders.get(model, set()).discard(node)
        if not self.holders.get(model):
            self.last[model] = cause


@dataclass
class NodeParams:
    vram_gb: float = 22.0
    max_loaded: int = 3
    parallel: int = 4
    max_queue: int = 512
    load_fixed_s: float = 1.5
    bw_hot: float = 6.0
    bw_cold: float = 2.5
    unload_s: float = 1.0
    serial_frac: float = 0.35
    page_cache_gb: float = 64.0
    instant_loads: bool = False  # the oracle's "free, instant loads"


class Node:
    def __init__(self, index: int, params: NodeParams) -> None:
        self.index = index
        self.p = params
        self.runners: dict[str, Runner] = {}
        self.pending: deque[Request] = deque()
        self.loading: Runner | None = None
        self.blocked_on: Runner | None = None
        self.recovered_at = -math.inf  # an eviction's VRAM is back then: the pending queue waits until it is
        self.freeing: list[tuple[float, float]] = []  # (free_at, gb)
        self.page_cache: deque[str] = deque()
        self.up = True
        self.loads = 0
        self.load_times: list[float] = []  # when each load began (counters only)
        self.evictions = 0
        # Why each load happened (counters only: no event depends on them): the model's last runner here
        # expired idle past its keep-alive, was evicted for another model, or reloaded for another num_ctx;
        # else, never loaded here: a replica (a copy is loaded elsewhere), or the model resident nowhere
        # because its last copy in the fleet expired (or was evicted), or its first load anywhere.
        self.load_causes = dict.fromkeys(CAUSES, 0)
        self._left: dict[str, str] = {}  # model -> how its last runner here went
        self.book = LoadBook()  # shared by the fleet's nodes (bench/policy_sim/run.py)
        self.unfit: list[Request] = []
        self.version = 0  # bumped whenever the set of runners changes (what /api/ps would list)

    def quiet_until(self) -> float:
        """Until when stepping this node changes nothing (-inf: it has work now): no queue, no load, no
        busy runner, and no idle runner's keep-alive running out before then. Lets the simulation skip
        idle nodes without changing a single event (bench/policy_sim/run.py)."""
        if self.pending or self.loading is not None or self.blocked_on is not None or self.unfit:
            return -math.inf
        until = math.inf
        for runner in self.runners.values():
            if runner.active or runner.fifo:
                return -math.inf
            if runner.idle_since is not None:
                until = min(until, runner.idle_since + runner.session_s)
        return until

    def used_vram(self, now: float) -> float:
        # With the same tolerance as `schedule`'s wait for `recovered_at`: virtual time is a sum of DT
        # steps, so the step that ends that wait can fall a rounding error short of it, and counting the
        # victim's memory as still in use there evicted a second model after all.
        self.freeing = [(t, gb) for t, gb in self.freeing if t > now + 1e-9]
        return sum(r.vram for r in self.runners.values()) + sum(gb for _, gb in self.freeing)

    def arrive(self, req: Request, now: float) -> str | None:
        """Accept a request; returns an error ("down", "503") if refused."""
        if not self.up:
            return "down"
        runner = self.runners.get(req.model)
        if runner is not None and runner.num_ctx == req.num_ctx and not runner.unloading:
            runner.fifo.append(req)  # the fast path: attach to the loaded runner
            runner.idle_since = None
            return None
        if len(self.pending) >= self.p.max_queue:
            return "503"
        self.pending.append(req)
        return None

    def fail(self) -> list[Request]:
        """The node dies: every request on it is lost (the gateway may retry those with no first token)."""
        self.up = False
        lost = list(self.pending)
        for runner in self.runners.values():
            lost += runner.active + list(runner.fifo)
            self.book.gone(runner.spec.name, self.index, "evicted")
        self.runners.clear()
        self.version += 1
        self.pending.clear()
        self.loading = self.blocked_on = None
        self.freeing.clear()
        self.page_cache.clear()
        return lost

    def _victim(self) -> Runner:
        ordered = sorted(self.runners.values(), key=lambda r: (r.session_s, r.spec.name))
        for runner in ordered:
            if runner.ref == 0:
                return runner
        return ordered[0]

    def _unload(self, runner: Runner, now: float, cause: str = "evicted") -> None:
        if self._left.get(runner.spec.name) != "num_ctx" or cause != "evicted":
            self._left[runner.spec.name] = cause
        self.book.gone(runner.spec.name, self.index, self._left[runner.spec.name])
        self.runners.pop(runner.spec.name, None)
        self.version += 1
        self.freeing.append((now + (0 if self.p.instant_loads else self.p.unload_s), runner.vram))
        self.evictions += 1

    def _load_time(self, spec: ModelSpec) -> float:
        if self.p.instant_loads:
            return 0.0
        hot = spec.name in self.page_cache
        if hot:
            self.page_cache.remove(spec.name)
        self.page_cache.append(spec.name)
        while sum(SPECS[n].disk_gb for n in self.page_cache) > self.p.page_cache_gb:
            self.page_cache.popleft()
        return self.p.load_fixed_s + spec.disk_gb / (self.p.bw_hot if hot else self.p.bw_cold)

    def schedule(self, now: float, specs: dict[str, ModelSpec]) -> None:
        """Ollama's processPending: one pending request at a time, loads serialised."""
        if self.loading is not None:
            if now < self.loading.ready_at:
                return
            self.loading = None
        if self.blocked_on is not None:
            victim = self.blocked_on
            if victim.ref > 0:
                return
            self._unload(victim, now)
            self.blocked_on = None
            # Ollama waits for the victim's VRAM to come back before it weighs its queue again
            # (server/sched.go: processPending blocks on unloadedCh, which processCompleted signals only
            # after waitForVRAMRecovery; fleet-model.md §1.4, rule 2): weighing it at once, with that
            # memory still counted, would evict a second model.
            if not self.p.instant_loads:
                self.recovered_at = now + self.p.unload_s
        if now < self.recovered_at - 1e-9:
            return  # the evicted victim's VRAM is not back yet
        while self.pending:
            req = self.pending[0]
            runner = self.runners.get(req.model)
            if runner is not None and runner.num_ctx == req.num_ctx and not runner.unloading:
                runner.fifo.append(self.pending.popleft())
                continue
            if runner is not None:  # same model, other num_ctx: reload
                runner.unloading = True
                runner.session_s = 0
                self.blocked_on = runner
                self._left[runner.spec.name] = "num_ctx"
                return
            spec = specs[req.model]
            slots = self.p.parallel
            need = spec.vram_gb(req.num_ctx, slots)
            if len(self.runners) < self.p.max_loaded and need <= 0.8 * (self.p.vram_gb - self.used_vram(now)) + 1e-9:
                runner = Runner(spec, req.num_ctx, slots, need, now + self._load_time(spec))
                self.runners[spec.name] = runner
                self.version += 1
                self.loads += 1
                self.load_times.append(now)
                self.load_causes[self._left.pop(spec.name, None) or self.book.cause(spec.name)] += 1
                self.book.holders.setdefault(spec.name, set()).add(self.index)
                self.loading = runner
                for waiting in [r for r in self.pending if r.model == req.model and r.num_ctx == req.num_ctx]:
                    self.pending.remove(waiting)
                    waiting.loaded_for = True
                    runner.fifo.append(waiting)
                return
            if not self.runners:
                if self.freeing:
                    return  # VRAM of an unloaded victim is still being released
                req.failed = "does not fit"
                self.unfit.append(self.pending.popleft())
                continue
            victim = self._victim()
            victim.unloading = True
            victim.session_s = 0
            self.blocked_on = victim
            return

    def step(self, now: float, dt: float, finished: list[Request], started: list[Request]) -> None:
        """Advance every busy runner by dt, time-sharing the GPU equally. Requests that produced their
        first token go to `started`, those that completed to `finished`."""
        busy = []
        for runner in self.runners.values():
            if runner.ready_at > now:
                continue
            while runner.fifo and len(runner.active) < runner.slots:
                runner.active.append(req := runner.fifo.popleft())
                if req.segments:
                    runner.take_slot(req)
            if runner.active:
                busy.append(runner)
        if not busy:
            return
        share = dt / len(busy)
        s = self.p.serial_frac
        for runner in busy:
            budget = share
            active = runner.active
            # The same arithmetic as evaluating every request each step, in fewer passes: decoding
            # steps (the common case) skip the prefill scan.
            decoding = active
            if any(r.prefill_left > 0 for r in active):
                pp = runner.spec.pp
                for req in [r for r in active if r.prefill_left > 0]:
                    need = req.prefill_left / pp
                    if need <= budget:
                        budget -= need
                        req.prefill_left = 0
                        req.first_token = now + (share - budget)
                        started.append(req)
                    else:
                        req.prefill_left -= budget * pp
                        budget = 0
                        break
                decoding = [r for r in active if r.prefill_left <= 0]
            if decoding and budget > 0:
                delta = runner.spec.tg1 / (1 + s * (len(decoding) - 1)) * budget
                for req in decoding:
                    req.decode_left -= delta
            for req in [r for r in decoding if r.decode_left <= 0]:
                active.remove(req)
                if req.segments:
                    runner.free_slot(req)
                req.done_at = now + dt
                finished.append(req)
            if not active and not runner.fifo:
                runner.idle_since = now + dt
                if runner.session_s == 0 and not runner.unloading:
                    self._unload(runner, now + dt)

    def expire(self, now: float) -> None:
        for runner in list(self.runners.values()):
            if runner.active or runner.fifo or runner.idle_since is None:
                continue
            expired = now - runner.idle_since >= runner.session_s
            if expired and runner is not self.blocked_on and runner is not self.loading:
                self._unload(runner, now, "expired")
                self.evictions -= 1  # an expiry, not an eviction


def _common(held: tuple[tuple[int, int], ...], prompt: tuple[tuple[int, int], ...]) -> int:
    """Tokens of the longest common prefix, counted in whole segments (messages)."""
    tokens = 0
    for a, b in zip(held, prompt, strict=False):
        if a != b:
            break
        tokens += a[1]
    return tokens
