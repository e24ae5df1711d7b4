"""The audit record's timestamp, formatted once per second, reads exactly as datetime formats it."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from corral.adapters.audit import utc_millis


def reference(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False, allow_infinity=False))
def test_any_time_reads_as_datetime_writes_it(epoch: float) -> None:
    assert utc_millis(epoch) == reference(epoch)


@given(st.integers(min_value=0, max_value=4_102_444_800), st.sampled_from([0.0, 0.0005, 0.9994999, 0.9995, 0.9999995]))
def test_the_edges_of_a_second_and_a_millisecond(second: int, fraction: float) -> None:
    # Twice in a row, so the second's cached text is used as well as made.
    assert utc_millis(second + fraction) == reference(second + fraction)
    assert utc_millis(second + fraction) == reference(second + fraction)
