"""The lock-free counters and histograms behind /metrics expose exactly what prometheus_client's own
`Counter` and `Histogram` expose for the same updates: dashboards, alerts and recording rules read the
same names, labels, bucket bounds and values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

from corral.adapters.metric_types import PlainCounter, PlainHistogram
from corral.adapters.metrics import LATENCY_BUCKETS, SPEED_BUCKETS

disable_created_metrics()  # type: ignore[no-untyped-call]  # as Metrics does

LABELS = st.sampled_from([("/api/chat", "a:1b"), ("/v1/chat/completions", "other"), ("/api/generate", "none")])
# Bounds exactly, just above and below them, zero, huge and infinite values: the bucket rule's edges.
VALUES = st.one_of(
    st.sampled_from([*LATENCY_BUCKETS, *SPEED_BUCKETS, 0.0, math.inf, 1e12]),
    st.floats(min_value=0, max_value=2000, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(LABELS, VALUES), max_size=40), st.sampled_from([LATENCY_BUCKETS, SPEED_BUCKETS]))
def test_a_histogram_exposes_what_the_library_histogram_exposes(
    updates: list[tuple[tuple[str, str], float]], buckets: tuple[float, ...]
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = PlainHistogram("corral_x_seconds", "Doc.", ["route", "model"], buckets=buckets, registry=ours)
    lib = Histogram("corral_x_seconds", "Doc.", ["route", "model"], buckets=buckets, registry=theirs)
    unlabelled = PlainHistogram("corral_y_seconds", "Doc.", buckets=buckets, registry=ours)
    lib_unlabelled = Histogram("corral_y_seconds", "Doc.", buckets=buckets, registry=theirs)
    for labels, value in updates:
        plain.labels(*labels).observe(value)
        lib.labels(*labels).observe(value)
        unlabelled.observe(value)
        lib_unlabelled.observe(value)
    assert generate_latest(ours) == generate_latest(theirs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(LABELS, st.integers(0, 10**6)), max_size=40))
def test_a_counter_exposes_what_the_library_counter_exposes(updates: list[tuple[tuple[str, str], int]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = PlainCounter("corral_tokens", "Doc.", ["route", "model"], registry=ours)
    lib = Counter("corral_tokens", "Doc.", ["route", "model"], registry=theirs)
    unlabelled = PlainCounter("corral_store_errors", "Doc.", registry=ours)  # 0 before the first increment
    lib_unlabelled = Counter("corral_store_errors", "Doc.", registry=theirs)
    assert generate_latest(ours) == generate_latest(theirs)
    for labels, amount in updates:
        plain.labels(*labels).inc(amount)
        lib.labels(*labels).inc(amount)
        unlabelled.inc()
        lib_unlabelled.inc()
    assert generate_latest(ours) == generate_latest(theirs)


def test_label_sets_of_the_wrong_length_and_duplicate_names_are_refused_as_by_the_library() -> None:
    registry = CollectorRegistry()
    counter = PlainCounter("corral_requests", "Doc.", ["route", "model"], registry=registry)
    with pytest.raises(ValueError, match="route"):
        counter.labels("/api/chat")
    with pytest.raises(ValueError):
        PlainHistogram("corral_requests", "Doc.", buckets=LATENCY_BUCKETS, registry=registry)
    with pytest.raises(ValueError):
        Counter("corral_requests", "Doc.", registry=registry)
