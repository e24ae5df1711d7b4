"""Properties of the circuit breaker and the rise/fall health tracker, over random event sequences."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.breaker import BreakerState, CircuitBreaker
from corral.domain.health import HealthTracker


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state now (a call, so that the type checker does not carry an earlier narrowing over)."""
    return breaker.state


events = st.lists(st.tuples(st.sampled_from(["ok", "fail", "admit"]), st.floats(0, 5)), max_size=300)


@given(events)
def test_open_breaker_admits_nothing_before_cooldown_and_one_trial_after(seq: list[tuple[str, float]]) -> None:
    breaker = CircuitBreaker(failure_threshold=3, failure_rate=0.5, window=10, min_requests=4, cooldown_s=10)
    now = 0.0
    last_trial = float("-inf")
    for event, dt in seq:
        now += dt
        if event == "ok":
            breaker.record_success(now)
        elif event == "fail":
            breaker.record_failure(now)
        else:
            state_before = breaker.state
            trial_taken = breaker.trial_out
            would = breaker.would_admit(now)
            admitted = breaker.admit(now)
            assert admitted == would
            if state_before is BreakerState.OPEN and now - breaker.opened_at < breaker.cooldown_s:
                assert not admitted
            if state_before is BreakerState.HALF_OPEN and trial_taken:
                # one trial at a time; another only once the first is presumed lost
                assert admitted == (now - last_trial >= breaker.cooldown_s)
            if admitted and breaker.state is BreakerState.HALF_OPEN:
                last_trial = now
                assert breaker.trial_out and not breaker.would_admit(now)
            if state_before is not BreakerState.CLOSED and state(breaker) is BreakerState.CLOSED:
                raise AssertionError("admitting never closes a breaker")


@given(st.lists(st.booleans(), max_size=100), st.integers(1, 5))
def test_half_open_admits_exactly_one_trial_then_follows_its_result(results: list[bool], threshold: int) -> None:
    breaker = CircuitBreaker(failure_threshold=threshold, cooldown_s=4)
    for _ in range(threshold):
        breaker.record_failure(0.0)
    assert state(breaker) is BreakerState.OPEN
    for ok in results:
        assert not breaker.admit(breaker.opened_at + 3.75)
        now = breaker.opened_at + 4.0
        admitted = [breaker.admit(now + i * 0.0625) for i in range(5)]
        assert admitted == [True, False, False, False, False]
        assert state(breaker) is BreakerState.HALF_OPEN
        if ok:
            breaker.record_success(now + 0.5)
            assert state(breaker) is BreakerState.CLOSED
            for _ in range(threshold):
                breaker.record_failure(now + 0.75)
        else:
            breaker.record_failure(now + 0.5)
        assert state(breaker) is BreakerState.OPEN


def test_late_success_does_not_close_an_open_breaker_and_a_lost_trial_expires() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5)
    breaker.record_failure(0)
    breaker.record_success(1)  # an answer to a request admitted before the breaker opened
    assert state(breaker) is BreakerState.OPEN
    assert breaker.admit(5) and not breaker.admit(9.9)
    assert breaker.admit(10)  # the first trial never reported back


def test_breaker_cycle() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5)
    breaker.record_failure(0)
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure(1)
    assert state(breaker) is BreakerState.OPEN and not breaker.admit(2)
    assert breaker.admit(6) and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.admit(6.1)
    breaker.record_failure(7)
    assert state(breaker) is BreakerState.OPEN and not breaker.admit(8)
    assert breaker.admit(12.5)
    breaker.record_success(13)
    assert state(breaker) is BreakerState.CLOSED and breaker.admit(13)


def test_failure_rate_opens_without_a_streak() -> None:
    breaker = CircuitBreaker(failure_threshold=100, failure_rate=0.5, window=10, min_requests=10)
    for i in range(10):
        (breaker.record_failure if i % 2 else breaker.record_success)(i)
    assert state(breaker) is BreakerState.OPEN


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
