"""When requests are due in open-loop mode: a Poisson process at a fixed rate.

An open-loop test fixes the send times in advance, independently of how fast the server answers; each
request's latency is then measured from its scheduled time, so a server that falls behind shows its
queueing instead of slowing the load generator down (no coordinated omission). Pure: a seeded random
source in, offsets in seconds out.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def poisson_arrivals(rate: float, rng: random.Random, start: float = 0.0) -> Iterator[float]:
    """Arrival times (seconds after `start`, increasing, unbounded) of a Poisson process of `rate`
    per second: independent exponential gaps with mean 1/rate."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, not {rate}")
    t = start
    expovariate = rng.expovariate
    while True:
        t += expovariate(rate)
        yield t


def arrivals_until(rate: float, rng: random.Random, duration_s: float | None, count: int | None) -> Iterator[float]:
    """The arrivals of one run: those before `duration_s`, or the first `count` of them."""
    if duration_s is None and count is None:
        raise ValueError("an open-loop run needs a duration or a request count")
    for n, t in enumerate(poisson_arrivals(rate, rng)):
        if (count is not None and n >= count) or (duration_s is not None and t >= duration_s):
            return
        yield t
