"""Counters and histograms kept as plain numbers, turned into Prometheus families only at scrape time.

prometheus_client's `Counter` and `Histogram` take a lock on every increment (a `MutexValue` per
sample, one per bucket touched and one for the sum) and validate the label values on every
`.labels()` call. Corral updates its request metrics from one thread, the event loop's, and /metrics is
rendered on that same thread, so the locks buy nothing there: these keep a list of floats per label
set, and `collect()` (prometheus_client's custom-collector API) builds the usual families from them.
The exposition is the same, byte for byte, as the library's own types give (a unit test compares
them); only the cost per update changes (docs/benchmarks.md §5, "CPU per request, change by change").

Only for code running on the event loop thread: an update from another thread could lose an increment.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_INF = float("inf")


class _Family(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        registry.register(self)

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values!r}")

    def describe(self) -> Iterator[Metric]:
        # The registry's duplicate-name check reads this; the samples come from collect().
        yield from self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(with_samples=True)

    def _families(self, with_samples: bool) -> Iterator[Metric]:
        raise NotImplementedError


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class PlainCounter(_Family):
    """A counter with prometheus_client's interface (`labels(...).inc(n)`, `inc(n)` without labels)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self._children: dict[tuple[str, ...], CounterChild] = {}
        if not self.labelnames:
            self._children[()] = CounterChild()  # exported as 0 from the start, as the library does

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            child = self._children[values] = CounterChild()
        return child

    def inc(self, amount: float = 1.0) -> None:
        self._children[()].value += amount

    def _families(self, with_samples: bool) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if with_samples:
            for values, child in self._children.items():
                family.add_metric(values, child.value)
        yield family


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative (summed at scrape time)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        if amount <= _INF:  # NaN lands in no bucket, as with the library's histogram
            self.counts[bisect_left(self.bounds, amount)] += 1


class PlainHistogram(_Family):
    """A histogram with prometheus_client's interface (`labels(...).observe(v)`, `observe(v)`) and its
    bucket rule: a value lands in the first bucket whose upper bound is >= it."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != _INF:
            bounds.append(_INF)
        self.bounds = tuple(bounds)
        self._les = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]  # the library's own le format
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        if not self.labelnames:
            self._children[()] = HistogramChild(self.bounds)

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            child = self._children[values] = HistogramChild(self.bounds)
        return child

    def observe(self, amount: float) -> None:
        self._children[()].observe(amount)

    def _families(self, with_samples: bool) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if with_samples:
            for values, child in self._children.items():
                running = 0
                buckets: list[tuple[str, float]] = []
                for le, count in zip(self._les, child.counts, strict=True):
                    running += count
                    buckets.append((le, float(running)))
                family.add_metric(values, buckets, child.sum)
        yield family
