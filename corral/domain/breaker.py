"""A circuit breaker per node: closed → open after consecutive failures or a failure rate over a
window of the last requests → half-open after a cool-down, admitting one trial → closed on success,
open again on failure. A trial that never reports back (its client left) is presumed lost after
another cool-down, so a half-open breaker cannot stick. Time is always an argument.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        failure_rate: float = 0.5,
        window: int = 20,
        min_requests: int = 10,
        cooldown_s: float = 10.0,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.min_requests = min_requests
        self.cooldown_s = cooldown_s
        self.state = BreakerState.CLOSED
        self.opened_at = 0.0
        self._consecutive = 0
        self._results: deque[bool] = deque(maxlen=window)
        self._trial_out = False
        self._trial_at = 0.0

    @property
    def trial_out(self) -> bool:
        """Half-open, with its one trial request admitted and not yet reported."""
        return self.state is BreakerState.HALF_OPEN and self._trial_out

    def _trial_lost(self, now: float) -> bool:
        return self._trial_out and now - self._trial_at >= self.cooldown_s

    def would_admit(self, now: float) -> bool:
        """Whether `admit(now)` would let a request through, without taking the half-open trial."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return now - self.opened_at >= self.cooldown_s
        return not self._trial_out or self._trial_lost(now)

    def admit(self, now: float) -> bool:
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown_s:
            self.state = BreakerState.HALF_OPEN
            self._trial_out = False
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and (not self._trial_out or self._trial_lost(now)):
            self._trial_out = True
            self._trial_at = now
            return True
        return False

    def record_success(self, now: float) -> None:
        self._consecutive = 0
        if self.state is BreakerState.OPEN:
            return  # a late answer to a request admitted before the breaker opened
        self._results.append(True)
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.CLOSED
            self._results.clear()
            self._trial_out = False

    def record_failure(self, now: float) -> None:
        self._consecutive += 1
        self._results.append(False)
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self.state is BreakerState.OPEN:
            return
        failures = self._results.count(False)
        over_rate = len(self._results) >= self.min_requests and failures / len(self._results) >= self.failure_rate
        if self._consecutive >= self.failure_threshold or over_rate:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self._trial_out = False
