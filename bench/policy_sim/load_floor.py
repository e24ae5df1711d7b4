"""The fleet as one memory pool, and the loads any router must make on a request trace: the floors and
the estimate behind bench/policy_sim/load_bound.py (its docstring has the relaxation and the proof
sketch; the names here follow it)."""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.policy_sim.fleet import ModelSpec, NodeParams
from bench.policy_sim.run import Scenario, workload

SLACK = 1e-9  # GB: sizes that fit exactly are not refused for a rounding error


@dataclass(frozen=True)
class Pool:
    capacity_gb: float  # the fleet's memory as one pool
    max_resident: int  # runners the fleet may hold at once
    sizes: tuple[float, ...]  # GB of each runner's smallest copy, by runner index


@dataclass(frozen=True)
class Trace:
    arrivals: tuple[float, ...]
    runners: tuple[int, ...]  # each request's runner (index into pool.sizes)
    pool: Pool
    unservable: int = 0  # requests whose runner fits no node (left out: no router serves them)

    @property
    def requests(self) -> int:
        """All of the draw's requests, unservable ones included: the simulator's loads per 1,000 count them."""
        return len(self.runners) + self.unservable


class Fit:
    """How many of a growing set of runners can be resident together (the smallest first, within the
    room and the count), kept up to date as each is added."""

    def __init__(self, room_gb: float, most: int) -> None:
        self.sizes: list[float] = []
        self.room = room_gb  # what the `fit` smallest leave free
        self.most = most
        self.fit = 0

    def add(self, size: float) -> None:
        bisect.insort(self.sizes, size)
        f = self.fit
        if f and size < self.sizes[f]:  # it takes the place of the largest of the fitting ones
            self.room += self.sizes[f] - size
        # At most one more fits: the next smallest did not before, else `fit` would have counted it.
        if f < self.most and f < len(self.sizes) and self.sizes[f] <= self.room + SLACK:
            self.room -= self.sizes[f]
            self.fit += 1


def smallest_copy(spec: ModelSpec, num_ctx: int, nodes: Sequence[NodeParams]) -> float | None:
    """GB of a runner's smallest copy on a node it fits (fleet.py: a load needs <= 0.8 x free memory)."""
    needs = [(spec.vram_gb(num_ctx, p.parallel), p.vram_gb) for p in nodes]
    return min((need for need, memory in needs if need <= 0.8 * memory), default=None)


def trace_of(scenario: Scenario, seed: int) -> Trace:
    """The requests simulate(scenario, policy, seed) replays, keyed by runner (model, num_ctx)."""
    nodes = [scenario.node(i) for i in range(scenario.nodes)]
    specs = {m.name: m for m in scenario.models}
    index: dict[tuple[str, int], int] = {}
    sizes: list[float] = []
    arrivals: list[float] = []
    runners: list[int] = []
    unservable = 0
    for req in workload(scenario, random.Random(seed * 7919 + 1)):
        key = (req.model, req.num_ctx)
        if key not in index:
            size = smallest_copy(specs[req.model], req.num_ctx, nodes)
            index[key] = -1 if size is None else len(sizes)
            sizes += [] if size is None else [size]
        if index[key] < 0:
            unservable += 1
            continue
        arrivals.append(req.arrival)
        runners.append(index[key])
    pool = Pool(sum(p.vram_gb for p in nodes), sum(p.max_loaded for p in nodes), tuple(sizes))
    return Trace(tuple(arrivals), tuple(runners), pool, unservable)


def compulsory(trace: Trace) -> int:
    """One load per runner requested: the floor when requests may wait without limit."""
    return len(set(trace.runners))


@dataclass
class Blocks:
    """Per start i, the blocks i..j worth a window, as (j, g) where g grows: `free` with the pool's
    contents at the start unknown, `anchored` with the runner of request i-1 known resident then,
    `empty` (start 0 only) from the empty pool."""

    free: list[list[tuple[int, int]]] = field(default_factory=list)
    anchored: list[list[tuple[int, int]]] = field(default_factory=list)
    empty: list[tuple[int, int]] = field(default_factory=list)


def blocks(trace: Trace) -> Blocks:
    n, pool = len(trace.runners), trace.pool
    out = Blocks([[] for _ in range(n)], [[] for _ in range(n)])
    order: list[int] = []  # runners by their next request from i: move-to-front, walking i backwards
    upcoming: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        k = trace.runners[i]
        if k in upcoming:
            order.remove(k)
        order.insert(0, k)
        upcoming[k] = i
        fit, gain = Fit(pool.capacity_gb, pool.max_resident), 0
        for count, runner in enumerate(order, start=1):
            fit.add(pool.sizes[runner])
            if count - fit.fit > gain:
                gain = count - fit.fit
                out.free[i].append((upcoming[runner], gain))
            if i == 0:
                out.empty.append((upcoming[runner], count))
        if i == 0:
            continue
        anchor = trace.runners[i - 1]  # resident with it: the others in what is left
        fit, gain, count = Fit(pool.capacity_gb - pool.sizes[anchor], pool.max_resident - 1), 0, 0
        for runner in order:
            if runner == anchor:
                continue
            fit.add(pool.sizes[runner])
            count += 1
            if count - fit.fit > gain:
                gain = count - fit.fit
                out.anchored[i].append((upcoming[runner], gain))
    return out


@dataclass(frozen=True)
class Window:
    first: int
    last: int
    gain: int


def windows(trace: Trace, wait_s: float, found: Blocks, anchors: bool = True) -> list[Window]:
    """The disjoint windows with the highest sum of g for this W (a dynamic programme over blocks)."""
    n, a = len(trace.runners), trace.arrivals
    best = [0] * n  # best sum over windows, the last one ending with request j
    came: list[tuple[int, int]] = [(-1, -1)] * n  # (first request of j's block, end of the window before)
    tops = {"free": [0, -1, 0], "anchored": [0, -1, 0]}  # best settled end: value, end, next end to settle

    def top(kind: str, by: float, below: int) -> tuple[int, int]:
        """The best end j' < below with a_j' + W <= by (its window closed by then), settled so far."""
        t = tops[kind]
        while t[2] < below and a[t[2]] + wait_s <= by:
            if best[t[2]] > t[0]:
                t[0], t[1] = best[t[2]], t[2]
            t[2] += 1
        return t[0], t[1]

    def offer(i: int, j: int, total: int, before: int) -> None:
        if total > best[j]:
            best[j], came[j] = total, (i, before)

    for j, g in found.empty:
        offer(0, j, g, -1)
    for i in range(n):
        value, end = top("free", a[i], i)
        for j, g in found.free[i]:
            offer(i, j, value + g, end)
        # The anchor's runner is resident at its first token, by a_{i-1} + W: before the block's.
        if anchors and i > 0 and a[i - 1] + wait_s <= a[i]:
            value, end = top("anchored", a[i - 1], i)
            for j, g in found.anchored[i]:
                offer(i, j, value + g, end)
    end = max(range(n), key=lambda j: best[j], default=-1)
    chosen: list[Window] = []
    while end >= 0 and best[end] > 0:
        first, before = came[end]
        chosen.append(Window(first, end, best[end] - (best[before] if before >= 0 else 0)))
        end = before
    return chosen[::-1]


def floor(trace: Trace, wait_s: float, slow_share: float, found: Blocks) -> int:
    """Loads every router makes whose TTFT is <= wait_s for all but `slow_share` of requests (rounded
    up). Anchored windows only when no request is exempt: a slow anchor guarantees nothing."""
    n = len(trace.runners)
    budget = n - int((1 - slow_share) * n) if slow_share > 0 else 0
    chosen = windows(trace, wait_s, found, anchors=budget == 0)
    costs: list[int] = []  # requests to make slow to drop one runner from one window
    for w in chosen:
        counts = Counter(trace.runners[w.first : w.last + 1])
        costs += sorted(counts.values())[: w.gain]
    dropped = 0
    for cost in sorted(costs):
        if cost > budget:
            break
        budget -= cost
        dropped += 1
    # Slow requests are served too, later: every runner requested is loaded at least once all the same.
    return max(compulsory(trace), sum(w.gain for w in chosen) - dropped)


def slowest_at(trace: Trace, per_1k: float, found: Blocks) -> float:
    """The p99 TTFT below which every router loads more than `per_1k` per 1,000 requests: with no
    more loads, p99 >= this (the floor only falls as W grows; bisected to 0.1 s). inf: never."""
    limit = per_1k * trace.requests / 1000
    if compulsory(trace) > limit:
        return math.inf

    def above(w: float) -> bool:
        return floor(trace, w, 0.01, found) > limit

    if not above(0.0):
        return 0.0
    low, high = 0.0, trace.arrivals[-1] - trace.arrivals[0] + 1.0
    while high - low > 0.1:
        mid = (low + high) / 2
        low, high = (mid, high) if above(mid) else (low, mid)
    return low


def farthest_in_future(trace: Trace) -> int:
    """Loads of farthest-in-future eviction over the pool, each request served at its arrival: a
    schedule of the relaxation, so at or above its optimum for every W (an estimate, not a bound)."""
    runners, pool = trace.runners, trace.pool
    following = [math.inf] * len(runners)  # index of the same runner's next request
    seen: dict[int, float] = {}
    for i in range(len(runners) - 1, -1, -1):
        following[i] = seen.get(runners[i], math.inf)
        seen[runners[i]] = i
    resident: dict[int, float] = {}  # runner -> its next request
    used, loads = 0.0, 0
    for i, k in enumerate(runners):
        if k not in resident:
            loads += 1
            while resident and (used + pool.sizes[k] > pool.capacity_gb + SLACK or len(resident) >= pool.max_resident):
                victim = max(resident, key=lambda r: resident[r])
                used -= pool.sizes[victim]
                del resident[victim]
            used += pool.sizes[k]
        resident[k] = following[i]
    return loads


def held_in_future(trace: Trace, wait_s: float, slow_share: float = 0.0) -> int:
    """Loads of a schedule that holds each request for a runner not resident until its deadline
    (arrival + W), then loads the runner for all of its held requests at once, evicting the runners
    asked for farthest in the future. Then, within the exempt share, it drops the copies that served
    the fewest requests, those requests waiting for the runner's next load (never its last). Every
    other TTFT is <= W, so it is at or above the relaxation's optimum for this W (an estimate, not a
    bound); W = 0 with none exempt is `farthest_in_future`."""
    runners, pool, a = trace.runners, trace.pool, trace.arrivals
    asked: dict[int, list[int]] = {}  # runner -> its requests, in order
    for i, k in enumerate(runners):
        asked.setdefault(k, []).append(i)
    seen = dict.fromkeys(asked, 0)  # per runner, how many of its requests have arrived

    def next_ask(k: int) -> float:
        later = asked[k][seen[k] :]
        return a[later[0]] if later else math.inf

    resident: dict[int, int] = {}  # runner -> its load (index into `served`)
    served: list[list[int]] = []  # per load: [runner, requests it served]
    held: dict[int, list[float]] = {}  # runner -> [first deadline of its held requests, how many]
    used = 0.0

    def load(k: int, requests: int) -> None:
        nonlocal used
        while resident and (used + pool.sizes[k] > pool.capacity_gb + SLACK or len(resident) >= pool.max_resident):
            victim = max(resident, key=next_ask)
            used -= pool.sizes[victim]
            del resident[victim]
        resident[k] = len(served)
        served.append([k, requests])
        used += pool.sizes[k]

    for i, k in enumerate([*runners, -1]):
        now = a[i] if k >= 0 else math.inf
        while held and held[due := min(held, key=lambda r: held[r][0])][0] <= now:
            load(due, int(held.pop(due)[1]))  # all its held requests are served at their first deadline
        if k < 0:
            break
        seen[k] += 1
        if k in resident:
            served[resident[k]][1] += 1
        elif k in held:
            held[k][1] += 1
        else:
            held[k] = [a[i] + wait_s, 1]
    n = len(runners)
    budget = n - int((1 - slow_share) * n) if slow_share > 0 else 0
    last = {k: j for j, (k, _) in enumerate(served)}
    dropped = 0
    for count in sorted(c for j, (k, c) in enumerate(served) if j != last[k]):
        if count > budget:
            break
        budget -= count
        dropped += 1
    return len(served) - dropped
