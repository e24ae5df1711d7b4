"""Distributions of what a load test measures: exact percentiles of recorded samples, a log-bucketed
histogram for figures that are too many to keep (inter-token gaps) or must be read while the run goes
(the live p50/p99), histogram bins for the report and the chart, and per-second timelines.

Pure: values in, figures out. Times are seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

QUANTILES = (50.0, 90.0, 95.0, 99.0)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence: the smallest value with at least q% of the
    samples at or below it (so p100 is the maximum and a p99 over 50 samples is the maximum too)."""
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    rank = math.ceil(q / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


def distribution(values: Iterable[float]) -> dict[str, Any]:
    """count, mean, min, p50/p90/p95/p99 and max of the samples (None for each figure when there are none)."""
    ordered = sorted(values)
    out: dict[str, Any] = {"count": len(ordered)}
    if not ordered:
        return out | {"mean": None, "min": None} | {f"p{q:g}": None for q in QUANTILES} | {"max": None}
    # clamped: the rounded mean of equal samples can land one ulp outside them
    out["mean"] = min(max(math.fsum(ordered) / len(ordered), ordered[0]), ordered[-1])
    out["min"] = ordered[0]
    for q in QUANTILES:
        out[f"p{q:g}"] = percentile(ordered, q)
    out["max"] = ordered[-1]
    return out


def bins(values: Sequence[float], count: int = 40) -> list[tuple[float, float, int]]:
    """Equal-width bins over [min, max] as (low, high, samples); the last bin includes its upper edge.
    Every sample lands in exactly one bin."""
    if count < 1:
        raise ValueError("need at least one bin")
    if not values:
        return []
    low, high = min(values), max(values)
    if high <= low:
        return [(low, high, len(values))]
    width = (high - low) / count
    counts = [0] * count
    for value in values:
        counts[min(int((value - low) / width), count - 1)] += 1
    return [(low + i * width, low + (i + 1) * width if i < count - 1 else high, n) for i, n in enumerate(counts)]


class LogHistogram:
    """Counts in logarithmically spaced buckets: recording is O(1), memory is fixed, and a percentile
    read back is within `precision` (relative) of the true sample. Exact min, max, count and sum."""

    __slots__ = ("_counts", "_inv_log_ratio", "_lowest", "_ratio", "count", "max", "min", "total")

    def __init__(self, lowest: float = 1e-6, highest: float = 1e4, precision: float = 0.01) -> None:
        if not 0 < lowest < highest or not 0 < precision < 1:
            raise ValueError("need 0 < lowest < highest and 0 < precision < 1")
        # A bucket [a, a*r) read back as its geometric middle is off by at most sqrt(r) - 1 <= precision.
        self._ratio = (1.0 + precision) ** 2
        self._inv_log_ratio = 1.0 / math.log(self._ratio)
        self._lowest = lowest
        self._counts = [0] * (int(math.log(highest / lowest) * self._inv_log_ratio) + 2)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _index(self, value: float) -> int:
        if value <= self._lowest:
            return 0
        return min(int(math.log(value / self._lowest) * self._inv_log_ratio) + 1, len(self._counts) - 1)

    def record(self, value: float) -> None:
        self._counts[self._index(value)] += 1
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: LogHistogram) -> None:
        if len(other._counts) != len(self._counts) or other._lowest != self._lowest:
            raise ValueError("histograms with different buckets")
        for i, n in enumerate(other._counts):
            self._counts[i] += n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float:
        """The nearest-rank percentile, to the histogram's precision (clamped to the exact min and max)."""
        if self.count == 0:
            raise ValueError("percentile of no samples")
        rank = max(math.ceil(q / 100.0 * self.count), 1)
        seen = 0
        for i, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if i == 0:
                    return self.min
                middle = self._lowest * math.pow(self._ratio, i - 0.5)
                return min(max(middle, self.min), self.max)
        return self.max

    def distribution(self) -> dict[str, Any]:
        if self.count == 0:
            return distribution(())
        out: dict[str, Any] = {"count": self.count, "mean": self.total / self.count, "min": self.min}
        for q in QUANTILES:
            out[f"p{q:g}"] = self.percentile(q)
        return out | {"max": self.max}


def timeline(
    starts: Sequence[float],
    ends: Sequence[float],
    ok: Sequence[bool],
    tokens: Sequence[int],
    ttft: Sequence[float],
    span_s: float,
) -> list[dict[str, Any]]:
    """Per-second rows over [0, span_s): completions, errors and output tokens by the second a request
    ended (throughput), and latency and TTFT percentiles by the second it was scheduled (so queueing
    shows where it began). Times are offsets from the start of the run; TTFT is NaN where unknown."""
    seconds = max(1, math.ceil(span_s))
    done = [0] * seconds
    errors = [0] * seconds
    toks = [0] * seconds
    lat: list[list[float]] = [[] for _ in range(seconds)]
    first: list[list[float]] = [[] for _ in range(seconds)]
    for start, end, good, count, t in zip(starts, ends, ok, tokens, ttft, strict=True):
        finished = min(max(int(end), 0), seconds - 1)
        if good:
            done[finished] += 1
            toks[finished] += count
        else:
            errors[finished] += 1
        began = min(max(int(start), 0), seconds - 1)
        if good:
            lat[began].append(end - start)
            if not math.isnan(t):
                first[began].append(t)
    rows = []
    for i in range(seconds):
        lat_sorted, ttft_sorted = sorted(lat[i]), sorted(first[i])
        rows.append(
            {
                "t": i,
                "completed": done[i],
                "errors": errors[i],
                "output_tokens": toks[i],
                "latency_p50_s": percentile(lat_sorted, 50) if lat_sorted else None,
                "latency_p99_s": percentile(lat_sorted, 99) if lat_sorted else None,
                "ttft_p50_s": percentile(ttft_sorted, 50) if ttft_sorted else None,
                "ttft_p99_s": percentile(ttft_sorted, 99) if ttft_sorted else None,
            }
        )
    return rows
