"""The in-process limit counters: sliding-window counters and concurrency slots in plain dicts, each check
O(1) and synchronous (no await between reading and charging, so one event loop never over-admits).

A sliding-window counter keeps the current fixed window's count and the previous one's; the previous
counts for the part of it that still overlaps the last `seconds` (weight = time left in the current window
/ window length). The same arithmetic runs in Redis as a Lua script (`limit_script.py`); the two are
checked against each other by one contract suite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

REQUESTS, TOKENS = 1, 2  # the groups an admission checks, in the order they refuse


@dataclass(frozen=True, slots=True)
class Window:
    """One counter to check and charge: `name` is its storage key, `scope` what the client is told."""

    name: str
    scope: str
    amount: int
    seconds: int
    cost: int
    group: int


# Built per request, never changed: not `frozen`, whose __init__ sets each field through
# object.__setattr__ (about three times the cost; docs/benchmarks.md §5).
@dataclass(slots=True)
class Outcome:
    """One admission's answer. `status`: 0 admitted, else the group that refused (REQUESTS, TOKENS) or 3
    for the concurrency slot; `at_ms`: the clock the windows were read at (settling charges that window).
    `picks[group]` = (index into the windows, remaining, reset_ms) for the refusing window or, when
    admitted, the tightest window of each group after this request's own charge."""

    status: int
    at_ms: int
    picks: dict[int, tuple[int, int, int]]
    slots_used: int = 0


CONCURRENCY = 3


def window_state(count: list[int] | None, index: int) -> tuple[int, int]:
    """(previous, current) counts of a stored [index, previous, current, ms] seen from window `index`."""
    if count is None:
        return 0, 0
    if count[0] == index:
        return count[1], count[2]
    if count[0] == index - 1:
        return count[2], 0
    return 0, 0


def read(previous: int, current: int, amount: int, span_ms: int, left_ms: int) -> tuple[float, int, int]:
    """(weighted count, remaining, ms until some of it frees) for one window."""
    weighted = max(0.0, previous * left_ms / span_ms + current)
    remaining = max(0, amount - math.floor(weighted))
    reset = math.inf
    if previous > 0:
        reset = math.fmod(left_ms, span_ms / previous)
    if current > 0:
        reset = min(reset, left_ms)
    return weighted, remaining, int(span_ms if math.isinf(reset) else reset)


class MemoryCounters:
    """Every window and slot of one process. Stale windows are swept once a minute, so per-address keys
    of clients long gone do not pile up."""

    def __init__(self) -> None:
        self.windows: dict[str, list[int]] = {}  # name: [window index, previous, current, window ms]
        self.slots: dict[str, int] = {}
        self._swept_ms = 0

    def _sweep(self, now_ms: int) -> None:
        self._swept_ms = now_ms
        stale = [k for k, (index, _, _, span) in self.windows.items() if index < now_ms // span - 1]
        for k in stale:
            del self.windows[k]

    def admit(self, windows: Sequence[Window], now_ms: int, slot: str | None, slot_limit: int) -> Outcome:
        if now_ms - self._swept_ms > 60_000:
            self._sweep(now_ms)
        seen: list[tuple[int, int, int, int, int]] = []  # index, previous, current, remaining, reset
        refused: tuple[int, int] | None = None  # group, window
        for j, w in enumerate(windows):
            span = w.seconds * 1000
            index = now_ms // span
            previous, current = window_state(self.windows.get(w.name), index)
            weighted, remaining, reset = read(previous, current, w.amount, span, span - (now_ms - index * span))
            seen.append((index, previous, current, remaining, reset))
            if refused is None and weighted + w.cost > w.amount:
                refused = (w.group, j)
        if refused is not None:
            group, j = refused
            return Outcome(group, now_ms, {group: (j, seen[j][3], seen[j][4])})
        used = self.slots.get(slot, 0) if slot is not None else 0
        if slot is not None and used >= slot_limit:
            return Outcome(CONCURRENCY, now_ms, {}, used)
        picks: dict[int, tuple[int, int, int]] = {}
        tightest: dict[int, float] = {}
        for j, (w, (index, previous, current, remaining, reset)) in enumerate(zip(windows, seen, strict=True)):
            self.windows[w.name] = [index, previous, current + w.cost, w.seconds * 1000]
            after = max(0, remaining - w.cost)
            if after / w.amount < tightest.get(w.group, math.inf):
                tightest[w.group] = after / w.amount
                picks[w.group] = (j, after, reset)
        if slot is not None:
            used = self.slots[slot] = used + 1
        return Outcome(0, now_ms, picks, used)

    def settle(self, charges: list[tuple[str, int, int]], at_ms: int, slot: str | None) -> None:
        """Charge each (name, seconds, delta) to the window that was current at `at_ms` (never below 0),
        and free `slot`."""
        for name, seconds, delta in charges:
            count = self.windows.get(name)
            if count is None or not delta:
                continue
            index = at_ms // (seconds * 1000)
            if count[0] == index:
                count[2] = max(0, count[2] + delta)
            elif count[0] == index + 1:
                count[1] = max(0, count[1] + delta)
        if slot is not None:
            left = self.slots.get(slot, 0) - 1
            if left > 0:
                self.slots[slot] = left
            else:
                self.slots.pop(slot, None)
