"""The load test's figures: percentiles, histogram bins, the log histogram behind live and inter-token
figures, and the per-second timeline."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.loadtest.stats import LogHistogram, bins, distribution, percentile, timeline

samples = st.lists(st.floats(1e-6, 1e3, allow_nan=False), min_size=1, max_size=400)
quantiles = st.floats(0.0, 100.0)


@given(samples, quantiles)
def test_percentile_is_the_nearest_rank(values: list[float], q: float) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    n = len(ordered)
    assert p in ordered
    # at least q% of the samples are at or below it, and fewer than q% strictly below it
    assert sum(v <= p for v in ordered) >= q / 100 * n - 1e-9
    assert sum(v < p for v in ordered) < max(q / 100 * n, 1)


@given(samples)
def test_percentiles_are_ordered_and_end_at_the_extremes(values: list[float]) -> None:
    d = distribution(values)
    assert d["count"] == len(values)
    assert d["min"] == min(values) and d["max"] == max(values)
    assert d["min"] <= d["p50"] <= d["p90"] <= d["p95"] <= d["p99"] <= d["max"]
    assert d["min"] <= d["mean"] <= d["max"]


def test_known_percentiles() -> None:
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1000 ms
    d = distribution(reversed(values))
    assert (d["p50"], d["p90"], d["p99"], d["max"]) == (0.5, 0.9, 0.99, 1.0)
    assert distribution([])["p99"] is None
    with pytest.raises(ValueError):
        percentile([], 50)


@given(samples, st.integers(1, 60))
def test_every_sample_lands_in_exactly_one_bin(values: list[float], count: int) -> None:
    edges = bins(values, count)
    assert sum(n for _, _, n in edges) == len(values)
    assert edges[0][0] == min(values) and edges[-1][1] == max(values)
    for (lo, hi, _), (next_lo, _, _) in itertools.pairwise(edges):
        assert lo <= hi and math.isclose(hi, next_lo)
    for lo, hi, n in edges:
        assert n == 0 or any(lo <= v <= hi for v in values)


@given(samples, quantiles)
def test_log_histogram_reads_back_within_its_precision(values: list[float], q: float) -> None:
    hist = LogHistogram(precision=0.01)
    for v in values:
        hist.record(v)
    exact = percentile(sorted(values), q)
    assert hist.percentile(q) == pytest.approx(exact, rel=0.0101)
    assert hist.count == len(values) and hist.min == min(values) and hist.max == max(values)


@given(samples, samples)
def test_merged_histograms_equal_one_that_saw_everything(a: list[float], b: list[float]) -> None:
    left, right, both = LogHistogram(), LogHistogram(), LogHistogram()
    for v in a:
        left.record(v)
        both.record(v)
    for v in b:
        right.record(v)
        both.record(v)
    left.merge(right)
    for q in (0, 50, 99, 100):
        assert left.percentile(q) == both.percentile(q)
    assert left.count == both.count


def test_timeline_counts_by_end_and_latency_by_schedule() -> None:
    # two requests due in second 0, one ending in second 0 and one (slow) in second 2; one error in second 1
    rows = timeline(
        starts=[0.1, 0.5, 1.2],
        ends=[0.3, 2.5, 1.4],
        ok=[True, True, False],
        tokens=[5, 7, 0],
        ttft=[0.05, 1.0, math.nan],
        span_s=2.5,
    )
    assert [r["completed"] for r in rows] == [1, 0, 1]
    assert [r["errors"] for r in rows] == [0, 1, 0]
    assert [r["output_tokens"] for r in rows] == [5, 0, 7]
    assert rows[0]["latency_p99_s"] == pytest.approx(2.0)  # the slow one shows where it was due
    assert rows[0]["ttft_p50_s"] == pytest.approx(0.05) and rows[0]["ttft_p99_s"] == pytest.approx(1.0)
    assert rows[1]["latency_p50_s"] is None
