"""Open-loop arrivals, the ramp search and the command line's rates and durations."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.loadtest.flags import parse_duration, parse_rate
from corral.loadtest.ramp import RampSearch
from corral.loadtest.schedule import arrivals_until, poisson_arrivals


@settings(max_examples=30, deadline=None)
@given(st.floats(0.1, 50_000), st.integers(0, 2**32))
def test_poisson_arrivals_increase_with_mean_gap_one_over_rate(rate: float, seed: int) -> None:
    times = list(itertools.islice(poisson_arrivals(rate, random.Random(seed)), 20_000))
    gaps = [b - a for a, b in itertools.pairwise([0.0, *times])]
    assert all(g > 0 for g in gaps)
    # exponential gaps: mean 1/rate and standard deviation equal to the mean (within ~7 standard errors)
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
    assert statistics.pstdev(gaps) == pytest.approx(1 / rate, rel=0.08)


def test_poisson_counts_per_window_have_variance_equal_to_mean() -> None:
    rate, windows = 200.0, 2000
    counts = [0] * windows
    for t in poisson_arrivals(rate, random.Random(7)):
        if t >= windows * 0.1:
            break
        counts[int(t / 0.1)] += 1
    mean = statistics.fmean(counts)
    assert mean == pytest.approx(20, rel=0.03)
    assert statistics.pvariance(counts) / mean == pytest.approx(1.0, abs=0.1)  # Poisson: dispersion 1


def test_a_run_ends_at_its_duration_or_count() -> None:
    by_time = list(arrivals_until(100, random.Random(1), 5.0, None))
    assert by_time[-1] < 5.0 and len(by_time) == pytest.approx(500, rel=0.15)
    assert len(list(arrivals_until(100, random.Random(1), None, 37))) == 37
    assert len(list(arrivals_until(100, random.Random(1), 60.0, 10))) == 10
    with pytest.raises(ValueError):
        next(poisson_arrivals(0, random.Random()))


def run_search(search: RampSearch, capacity: float) -> RampSearch:
    """A server whose p99 TTFT stays at 0.1 s below `capacity` and explodes above it."""
    for _ in range(100):
        rate = search.next_rate()
        if rate is None:
            return search
        assert search.low <= rate <= search.high
        search.observe(rate, 0.1 if rate <= capacity else 30.0)
    raise AssertionError("the search did not end")


@given(st.floats(1, 100), st.floats(1.5, 100), st.floats(0.5, 20_000))
def test_ramp_brackets_the_capacity(low: float, span: float, capacity: float) -> None:
    search = run_search(RampSearch(low, low * span, bound_s=2.0), capacity)
    assert len(search.steps) <= search.climb_steps + search.max_refinements
    best, over = search.best, search.first_over
    if capacity < low:
        assert best is None and over == low
    elif capacity >= low * span:
        assert over is None and best == pytest.approx(low * span)
    else:
        assert best is not None and over is not None
        assert best <= capacity < over
        # bisection ends within the precision unless it ran out of refinements
        climb_ratio = span ** (1 / (search.climb_steps - 1))
        assert over / best <= max(1 + search.precision, climb_ratio ** (0.5**search.max_refinements)) + 1e-9


def test_ramp_steps_for_a_known_capacity() -> None:
    search = run_search(RampSearch(10, 200, bound_s=2.0), capacity=50)
    rates = [round(s.rate, 1) for s in search.steps]
    assert rates[:5] == [10.0, 18.2, 33.1, 60.3, 44.7]  # climb by (200/10)^(1/5), then bisect (log scale)
    assert search.best is not None and 45 <= search.best <= 50
    assert search.first_over is not None and 50 < search.first_over <= 50 * 1.1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("90", 90), ("1.5s", 1.5), (" 3 s ", 3)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--duration") == seconds


@pytest.mark.parametrize("text", ["", "s", "-1s", "0s", "10x", "1e3s", "ten", "5 minutes"])
def test_bad_durations_name_the_flag(text: str) -> None:
    with pytest.raises(ValueError, match="--duration"):
        parse_duration(text, "--duration")


@pytest.mark.parametrize(
    ("text", "rate"),
    [("50/s", (50, None)), ("50", (50, None)), ("2.5/s", (2.5, None)), ("120/m", (2, None)), ("10:200/s", (10, 200))],
)
def test_rates(text: str, rate: tuple[float, float | None]) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "/s", "0/s", "-5/s", "fast", "10:5/s", "10:10", "1:2:3", "nan", "inf/s", "5/h"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--rate"):
        parse_rate(text)
