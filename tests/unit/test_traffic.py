"""The console's traffic ring (corral.domain.traffic): windows, steps, quantiles and key use, driven by
an explicit clock."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from corral.adapters.metrics import TTFT_BUCKETS
from corral.domain.traffic import TTFT_BOUNDS, TrafficRing, add_keys, add_routes, key_rows, quantile

T0 = 1_800_000_000.0  # any wall-clock second


def test_ttft_bins_are_the_prometheus_histogram_buckets() -> None:
    # The console's p50/p99 and histogram_quantile over /metrics agree only with the same buckets.
    assert tuple(float(b) for b in TTFT_BOUNDS) == tuple(float(b) for b in TTFT_BUCKETS)


def test_quantile_interpolates_within_a_bin_as_histogram_quantile() -> None:
    bins = [0] * (len(TTFT_BOUNDS) + 1)
    bins[2] = 100  # all samples in (0.025, 0.05]
    assert quantile(0.5, bins) == 0.025 + 0.025 * 0.5
    assert abs((quantile(0.99, bins) or 0) - (0.025 + 0.025 * 0.99)) < 1e-12
    bins[0] = 100  # as many again in (0, 0.01]: the median sits at the top of the first bin
    assert quantile(0.5, bins) == 0.01
    assert quantile(0.5, [0] * (len(TTFT_BOUNDS) + 1)) is None
    slow = [0] * len(TTFT_BOUNDS) + [3]  # only beyond the last bound: read as the last bound
    assert quantile(0.99, slow) == TTFT_BOUNDS[-1]


def test_a_request_counts_under_all_its_model_and_its_node() -> None:
    ring = TrafficRing()
    ring.request(T0, model="m:1b", node="a", error=False, ttft=0.03, tokens=40)
    ring.request(T0 + 0.5, model="m:1b", node="b", error=True)
    now = T0 + 10
    for scope, requests, errors, tokens in (("all", 2, 1, 40), ("model:m:1b", 2, 1, 40), ("node:a", 1, 0, 40)):
        s = ring.series(now, [scope], window_s=60, step_s=5)
        assert sum(s.requests_s) * 5 == requests, scope
        assert sum(s.errors_s) * 5 == errors, scope
        assert sum(s.tokens_s) * 5 == tokens, scope
    assert ring.scopes(now) == {"all", "model:m:1b", "node:a", "node:b"}
    assert ring.routes(now) == {"m:1b": {"a": 1, "b": 1}}


def test_steps_are_aligned_so_a_point_keeps_its_value_between_reads() -> None:
    ring = TrafficRing()
    for i in range(20):
        ring.request(T0 + i, model=None, node=None, error=False)
    first = ring.series(T0 + 21.2, ["all"], window_s=60, step_s=5)
    second = ring.series(T0 + 23.9, ["all"], window_s=60, step_s=5)
    assert first.t == second.t and first.requests_s == second.requests_s
    assert len(first.t) == 12 and first.t[-1] % 5 == 0
    assert first.requests_s[-4:] == [1.0, 1.0, 1.0, 1.0]  # a request a second over four complete steps


def test_the_second_still_filling_is_not_shown() -> None:
    ring = TrafficRing()
    ring.request(T0 + 0.2, model=None, node=None, error=False)
    assert sum(ring.series(T0 + 0.9, ["all"], 60, 1).requests_s) == 0
    assert sum(ring.series(T0 + 1.0, ["all"], 60, 1).requests_s) == 1


def test_gauges_show_the_highest_sample_of_a_step() -> None:
    ring = TrafficRing()
    ring.sample(T0, queue=3, in_flight={"all": 5, "node:a": 5})
    ring.sample(T0 + 1, queue=7, in_flight={"all": 2, "node:a": 2})
    s = ring.series(T0 + 10, ["all"], 60, 5)
    assert max(s.queue) == 7 and max(s.in_flight) == 5
    assert max(ring.series(T0 + 10, ["node:a"], 60, 5).in_flight) == 5


def test_summed_scopes_merge_their_ttft_histograms() -> None:
    ring = TrafficRing()
    for _ in range(50):
        ring.request(T0, model="fast", node="a", error=False, ttft=0.005)
        ring.request(T0, model="slow", node="a", error=False, ttft=4.0)
    both = ring.series(T0 + 5, ["model:fast", "model:slow"], 60, 5)
    fast = ring.series(T0 + 5, ["model:fast"], 60, 5)
    assert max(p for p in fast.ttft_p99 if p is not None) <= 0.01
    assert max(p for p in both.ttft_p99 if p is not None) > 3  # the slow model's tail shows in the sum


def test_key_use_separates_refusals_from_errors() -> None:
    ring = TrafficRing()
    ring.key_use(T0, "team", tokens=100, status=200, error=False)
    ring.key_use(T0, "team", tokens=0, status=429, error=True)
    ring.key_use(T0, "team", tokens=0, status=502, error=True)
    use = ring.keys(T0 + 1, 60)["team"]
    assert (use.requests, use.tokens, use.throttled, use.errors) == (3, 100, 1, 1)
    assert ring.keys(T0 + 62, 60) == {}  # a minute later it no longer counts against the minute


def test_a_slot_is_forgotten_when_its_second_comes_round_again() -> None:
    ring = TrafficRing(window_s=900)
    ring.request(T0, model=None, node=None, error=False)
    ring.request(T0 + 960, model=None, node=None, error=False)  # the same slot of a 960-slot ring
    assert sum(ring.series(T0 + 961, ["all"], 900, 1).requests_s) == 1
    assert ring.routes(T0 + 961, 900) == {}


@given(st.lists(st.floats(min_value=0, max_value=3000, allow_nan=False), max_size=200), st.integers(1, 60))
def test_a_window_counts_exactly_the_requests_of_its_complete_steps(offsets: list[float], step: int) -> None:
    ring = TrafficRing()
    for offset in sorted(offsets):
        ring.request(T0 + offset, model=None, node=None, error=False)
    now = T0 + 3000.5
    s = ring.series(now, ["all"], 900, step)
    start, end = s.t[0] - step, s.t[-1]
    expected = sum(1 for o in offsets if start <= int(T0 + o) < end)
    assert round(sum(s.requests_s) * step) == expected
    assert end <= int(now) and end - start == len(s.t) * step <= 900


request_events = st.lists(
    st.tuples(
        st.floats(0, 119.99),  # seconds after T0
        st.sampled_from(["a:1b", "b:7b"]),
        st.sampled_from(["n1", "n2"]),
        st.booleans(),
        st.one_of(st.none(), st.floats(0.001, 200)),
        st.integers(0, 500),
        st.booleans(),  # which worker saw it
    ),
    max_size=60,
)


@given(request_events)
def test_two_workers_rings_add_up_to_one_ring_that_saw_everything(events: list[tuple[Any, ...]]) -> None:
    """With several workers the console adds the others' steps, routes and key use to its own: the
    figures are those of one ring that saw every request."""
    one, two, both = TrafficRing(), TrafficRing(), TrafficRing()
    for at, model, node, error, ttft, tokens, first in events:
        for ring in (one if first else two, both):
            ring.request(T0 + at, model=model, node=node, error=error, ttft=ttft, tokens=tokens)
            ring.key_use(T0 + at, "k", tokens=tokens, status=500 if error else 200, error=error)
    now = T0 + 125
    for scope in ("all", "model:a:1b", "node:n2"):
        merged = one.steps(now, [scope], 120, 5)
        merged.add(two.steps(now, [scope], 120, 5).rows())
        assert merged.series() == both.series(now, [scope], 120, 5)
    routes = one.routes(now)
    add_routes(routes, two.routes(now))
    assert routes == both.routes(now)
    keys = one.keys(now, 300)
    add_keys(keys, key_rows(two.keys(now, 300)))
    assert keys == both.keys(now, 300)
