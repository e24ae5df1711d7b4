"""Ramp mode (`--rate 10:200/s`): find the highest request rate whose p99 TTFT stays within a bound.

The search runs steps of open-loop load. It first climbs from the low rate to the high one in equal
ratios; once a step breaks the bound it bisects (on a log scale) between the last rate that held and
the first that broke, until the two are within `precision` of each other. Pure: the caller runs each
step and reports its p99 TTFT (a step whose requests failed counts those as infinitely slow, so a
server that sheds load with fast errors does not pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    rate: float
    p99_ttft_s: float
    within: bool


@dataclass
class RampSearch:
    low: float
    high: float
    bound_s: float
    climb_steps: int = 6
    precision: float = 0.1
    max_refinements: int = 4
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise ValueError(f"a ramp needs 0 < low < high, not {self.low:g}:{self.high:g}")
        if not self.bound_s > 0:
            raise ValueError("the TTFT bound must be positive")
        if self.climb_steps < 2:
            raise ValueError("a climb needs at least 2 steps")
        self._ratio: float = math.pow(self.high / self.low, 1 / (self.climb_steps - 1))

    @property
    def best(self) -> float | None:
        """The highest rate seen to keep p99 TTFT within the bound."""
        held = [s.rate for s in self.steps if s.within]
        return max(held) if held else None

    @property
    def first_over(self) -> float | None:
        """The lowest rate seen to break the bound."""
        broke = [s.rate for s in self.steps if not s.within]
        return min(broke) if broke else None

    def next_rate(self) -> float | None:
        """The rate of the next step, or None when the search is over."""
        best, over = self.best, self.first_over
        if over is None:
            if not self.steps:
                return self.low
            last = self.steps[-1].rate
            if last >= self.high:
                return None  # never broke the bound up to the highest rate
            return min(self.high, last * self._ratio)
        if best is None or best > over:
            return None  # broke already at the lowest rate (or held only above a failure: noise; stop)
        if over / best <= 1 + self.precision or self._refined() >= self.max_refinements:
            return None
        return math.sqrt(best * over)

    def _refined(self) -> int:
        """Steps taken after the first one that broke the bound."""
        for i, step in enumerate(self.steps):
            if not step.within:
                return len(self.steps) - i - 1
        return 0

    def observe(self, rate: float, p99_ttft_s: float) -> Step:
        step = Step(rate, p99_ttft_s, p99_ttft_s <= self.bound_s)
        self.steps.append(step)
        return step
