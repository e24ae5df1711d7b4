"""The console's traffic figures: per-second tallies over the last 15 minutes, in a ring of slots.

Pure: the caller passes the time (wall-clock seconds) to every call, so tests drive it with any clock.
A slot holds one second: requests, errors, completion tokens and a TTFT histogram per scope ("all",
"model:NAME", "node:NAME"), the gauges sampled that second (queue length, requests in flight), which
nodes each model's requests went to, and each API key's use. A slot is reused when its second comes
round again, so memory is bounded by the window times the scopes seen, and no clean-up runs.

TTFT quantiles come from histogram bins with the same bounds as the Prometheus histogram
(`corral_time_to_first_token_seconds`), interpolated as `histogram_quantile` does, so the console and
a dashboard over `/metrics` agree.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 900
TTFT_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 3, 5, 10, 20, 30, 60, 120)
MAX_KEYS = 1000  # distinct key names tracked per second; beyond it, ignored (only with JWT subjects)


@dataclass(slots=True)
class Tally:
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    ttft: list[int] | None = None  # counts per TTFT_BOUNDS bin, the last one +Inf
    in_flight: int = 0  # sampled gauges: the highest value seen in the second
    queue: int = 0

    def add_ttft(self, seconds: float) -> None:
        if self.ttft is None:
            self.ttft = [0] * (len(TTFT_BOUNDS) + 1)
        self.ttft[bisect.bisect_left(TTFT_BOUNDS, seconds)] += 1


@dataclass(slots=True)
class KeyUse:
    requests: int = 0
    tokens: int = 0  # prompt and completion, as token limits charge them
    throttled: int = 0  # answered 429
    errors: int = 0


@dataclass(slots=True)
class Second:
    t: int
    tallies: dict[str, Tally] = field(default_factory=dict)
    routes: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, node) -> requests
    keys: dict[str, KeyUse] = field(default_factory=dict)

    def tally(self, scope: str) -> Tally:
        found = self.tallies.get(scope)
        if found is None:
            found = self.tallies[scope] = Tally()
        return found


def quantile(q: float, bins: list[int]) -> float | None:
    """The q-quantile of a TTFT histogram, interpolated linearly within its bin (as Prometheus'
    histogram_quantile); None without samples. A rank in the +Inf bin reads as the highest bound."""
    total = sum(bins)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(bins):
        if count and below + count >= rank:
            if index == len(TTFT_BOUNDS):
                return float(TTFT_BOUNDS[-1])
            lower = TTFT_BOUNDS[index - 1] if index else 0.0
            upper = TTFT_BOUNDS[index]
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return float(TTFT_BOUNDS[-1])


@dataclass(frozen=True, slots=True)
class Series:
    """Figures per step, oldest first. `t[i]` is the end of step i (epoch seconds); rates are per
    second over the step; gauges are the highest sample in the step; TTFT is None in a step without one."""

    t: list[int]
    requests_s: list[float]
    errors_s: list[float]
    tokens_s: list[float]
    ttft_p50: list[float | None]
    ttft_p99: list[float | None]
    queue: list[int]
    in_flight: list[int]


def _add(acc: Tally, requests: int, errors: int, tokens: int, ttft: Sequence[int] | None) -> None:
    acc.requests += requests
    acc.errors += errors
    acc.tokens += tokens
    if ttft is not None:
        if acc.ttft is None:
            acc.ttft = list(ttft)
        else:
            for i, count in enumerate(ttft):
                acc.ttft[i] += count


@dataclass(slots=True)
class Steps:
    """One process's tallies per step, before they become rates. With several worker processes each
    holds its own ring; the one asked adds the others' rows (`rows`/`add`), so the console shows the
    replica's traffic. Gauges are summed across workers: each has its own requests in flight and its
    own queue (the highest sample of each in the step, so the sum is an upper bound)."""

    start: int
    step_s: int
    tallies: list[Tally]

    def rows(self) -> list[list[object]]:
        return [[t.requests, t.errors, t.tokens, t.ttft, t.queue, t.in_flight] for t in self.tallies]

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Another worker's `rows()` for the same `now`, window and step."""
        for acc, row in zip(self.tallies, rows, strict=False):
            requests, errors, tokens, ttft, queue, in_flight = row
            _add(acc, int(requests), int(errors), int(tokens), ttft if isinstance(ttft, list) else None)
            acc.queue += int(queue)
            acc.in_flight += int(in_flight)

    def series(self) -> Series:
        step_s, steps = self.step_s, self.tallies
        return Series(
            t=[self.start + (i + 1) * step_s for i in range(len(steps))],
            requests_s=[s.requests / step_s for s in steps],
            errors_s=[s.errors / step_s for s in steps],
            tokens_s=[s.tokens / step_s for s in steps],
            ttft_p50=[quantile(0.5, s.ttft) if s.ttft else None for s in steps],
            ttft_p99=[quantile(0.99, s.ttft) if s.ttft else None for s in steps],
            queue=[s.queue for s in steps],
            in_flight=[s.in_flight for s in steps],
        )


def add_routes(into: dict[str, dict[str, int]], other: Mapping[str, Mapping[str, int]]) -> None:
    """Another worker's `TrafficRing.routes` added to `into`."""
    for model, per_node in other.items():
        mine = into.setdefault(model, {})
        for node, n in per_node.items():
            mine[node] = mine.get(node, 0) + int(n)


def key_rows(keys: Mapping[str, KeyUse]) -> dict[str, list[int]]:
    return {name: [u.requests, u.tokens, u.throttled, u.errors] for name, u in keys.items()}


def add_keys(into: dict[str, KeyUse], rows: Mapping[str, Sequence[int]]) -> None:
    """Another worker's `key_rows` added to `into`."""
    for name, (requests, tokens, throttled, errors) in rows.items():
        acc = into.setdefault(name, KeyUse())
        acc.requests += int(requests)
        acc.tokens += int(tokens)
        acc.throttled += int(throttled)
        acc.errors += int(errors)


class TrafficRing:
    def __init__(self, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        # A minute more than the window, so that a whole window of complete, step-aligned seconds is
        # always held while the current second fills.
        self._size = window_s + 60
        self._slots: list[Second | None] = [None] * self._size
        self._scope_names: dict[tuple[str | None, str | None], tuple[str, ...]] = {}  # built once per pair

    def _slot(self, now: float) -> Second:
        t = int(now)
        index = t % self._size
        slot = self._slots[index]
        if slot is None or slot.t != t:
            slot = self._slots[index] = Second(t)
        return slot

    def _seconds(self, now: float, window_s: int) -> Iterable[Second]:
        """The complete seconds of the last `window_s` (the current one is still filling)."""
        end = int(now)
        for t in range(end - min(window_s, self._size - 1), end):
            slot = self._slots[t % self._size]
            if slot is not None and slot.t == t:
                yield slot

    def request(
        self,
        now: float,
        *,
        model: str | None,
        node: str | None,
        error: bool,
        ttft: float | None = None,
        tokens: int = 0,
    ) -> None:
        """One finished inference request: counted under "all", its model and its node."""
        slot = self._slot(now)
        pair = (model, node)
        scopes = self._scope_names.get(pair)
        if scopes is None:
            scopes = ("all", *(f"model:{model}",) * (model is not None), *(f"node:{node}",) * (node is not None))
            if len(self._scope_names) < 4096:  # model and node names come from closed sets; a bound all the same
                self._scope_names[pair] = scopes
        if model is not None and node is not None:
            slot.routes[(model, node)] = slot.routes.get((model, node), 0) + 1
        tallies = slot.tallies
        for scope in scopes:
            tally = tallies.get(scope)
            if tally is None:
                tally = tallies[scope] = Tally()
            tally.requests += 1
            tally.errors += error
            tally.tokens += tokens
            if ttft is not None:
                tally.add_ttft(ttft)

    def key_use(self, now: float, key: str, *, tokens: int, status: int, error: bool) -> None:
        """One request charged to an API key (any route that its limits count)."""
        slot = self._slot(now)
        use = slot.keys.get(key)
        if use is None:
            if len(slot.keys) >= MAX_KEYS:
                return
            use = slot.keys[key] = KeyUse()
        use.requests += 1
        use.tokens += tokens
        use.throttled += status == 429
        use.errors += error and status != 429

    def sample(self, now: float, queue: int, in_flight: Mapping[str, int]) -> None:
        """Gauges read now: the queue length (under "all") and requests in flight per scope."""
        slot = self._slot(now)
        total = slot.tally("all")
        total.queue = max(total.queue, queue)
        for scope, value in in_flight.items():
            tally = slot.tally(scope)
            tally.in_flight = max(tally.in_flight, value)

    def scopes(self, now: float) -> set[str]:
        return {scope for slot in self._seconds(now, self.window_s) for scope in slot.tallies}

    def series(self, now: float, scopes: Collection[str], window_s: int = WINDOW_S, step_s: int = 5) -> Series:
        """The figures of `scopes` summed, in steps of `step_s` over the last `window_s` seconds.
        Steps are aligned to multiples of `step_s`, so a point keeps its value between two reads."""
        return self.steps(now, scopes, window_s, step_s).series()

    def steps(self, now: float, scopes: Collection[str], window_s: int = WINDOW_S, step_s: int = 5) -> Steps:
        """What `series` reads, before counts become rates (so other workers' steps can be added)."""
        step_s = min(max(1, step_s), 60)
        window_s = max(step_s, min(window_s, self.window_s))
        end = int(now) // step_s * step_s
        count = window_s // step_s
        start = end - count * step_s
        steps = [Tally() for _ in range(count)]
        for slot in self._seconds(now, window_s + step_s):
            if not start <= slot.t < end:
                continue
            acc = steps[(slot.t - start) // step_s]
            for scope in scopes:
                tally = slot.tallies.get(scope)
                if tally is None:
                    continue
                _add(acc, tally.requests, tally.errors, tally.tokens, tally.ttft)
                acc.queue = max(acc.queue, tally.queue)  # a gauge: its highest sample in the step
                acc.in_flight = max(acc.in_flight, tally.in_flight)
        return Steps(start, step_s, steps)

    def routes(self, now: float, window_s: int = 300) -> dict[str, dict[str, int]]:
        """model -> node -> requests over the last `window_s` seconds."""
        out: dict[str, dict[str, int]] = {}
        for slot in self._seconds(now, window_s):
            for (model, node), n in slot.routes.items():
                per_node = out.setdefault(model, {})
                per_node[node] = per_node.get(node, 0) + n
        return out

    def keys(self, now: float, window_s: int = 60) -> dict[str, KeyUse]:
        """key name -> its use over the last `window_s` seconds."""
        out: dict[str, KeyUse] = {}
        for slot in self._seconds(now, window_s):
            for name, use in slot.keys.items():
                acc = out.setdefault(name, KeyUse())
                acc.requests += use.requests
                acc.tokens += use.tokens
                acc.throttled += use.throttled
                acc.errors += use.errors
        return out
