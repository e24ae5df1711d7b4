"""Properties of the circuit breaker and the rise/fall health tracker, over random event sequences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.breaker import BreakerState, CircuitBreaker
from corral.domain.health import HealthTracker

events = st.lists(st.tuples(st.sampled_from(["ok", "fail", "admit"]), st.floats(0, 5)), max_size=300)


@given(events)
def test_open_breaker_admits_nothing_before_cooldown_and_one_trial_after(seq: list[tuple[str, float]]) -> None:
    breaker = CircuitBreaker(failure_threshold=3, failure_rate=0.5, window=10, min_requests=4, cooldown_s=10)
    now = 0.0
    for event, dt in seq:
        now += dt
        if event == "ok":
            breaker.record_success(now)
        elif event == "fail":
            breaker.record_failure(now)
        else:
            state_before = breaker.state
            trial_taken = breaker._trial_out
            admitted = breaker.admit(now)
            if state_before is BreakerState.OPEN and now - breaker.opened_at < breaker.cooldown_s:
                assert not admitted
            if state_before is BreakerState.HALF_OPEN and trial_taken:
                assert not admitted  # exactly one trial while half-open
            assert breaker.would_admit(now) == (
                breaker.state is BreakerState.CLOSED
                or (breaker.state is BreakerState.HALF_OPEN and not breaker._trial_out)
            )


def test_breaker_cycle() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5)
    breaker.record_failure(0)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(1)
    assert breaker.state is BreakerState.OPEN and not breaker.admit(2)
    assert breaker.admit(6) and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.admit(6.1)
    breaker.record_failure(7)
    assert breaker.state is BreakerState.OPEN and not breaker.admit(8)
    assert breaker.admit(12.5)
    breaker.record_success(13)
    assert breaker.state is BreakerState.CLOSED and breaker.admit(13)


def test_failure_rate_opens_without_a_streak() -> None:
    breaker = CircuitBreaker(failure_threshold=100, failure_rate=0.5, window=10, min_requests=10)
    for i in range(10):
        (breaker.record_failure if i % 2 else breaker.record_success)(i)
    assert breaker.state is BreakerState.OPEN


@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.booleans(), max_size=200))
def test_health_flips_only_after_consecutive_results(rise: int, fall: int, results: list[bool]) -> None:
    tracker = HealthTracker(rise=rise, fall=fall)
    history: list[bool] = []
    for ok in results:
        was = tracker.up
        changed = tracker.observe(ok)
        history.append(ok)
        assert changed == (tracker.up != was)
        if changed:
            need = rise if tracker.up else fall
            assert history[-need:] == [tracker.up] * need
