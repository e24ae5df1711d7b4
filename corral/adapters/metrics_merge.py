"""One /metrics answer for all the worker processes of a replica (`server.workers` > 1).

Each worker keeps its own registry (a counter increment stays a plain in-memory add: no file write on
the hot path). At scrape time the worker that answers asks its siblings for their samples over local
sockets (app/siblings.py) and merges them here: counters and histograms are summed, and so are the
gauges that count this worker's own work (in-flight requests, queue length); gauges that describe a
node (up, draining, breaker, loaded models, VRAM) read the same in every worker and are taken once,
from the answering worker. Why this over prometheus_client's multiprocess mode: docs/benchmarks.md
("Metrics across workers").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# Gauges that count what one worker holds; the replica's value is the sum.
SUMMED_GAUGES = frozenset({"corral_node_in_flight_requests", "corral_in_flight_requests", "corral_queue_length"})

# One family as it crosses a socket: [name, type, help, [[sample name, labels, value], ...]]
Family = list[Any]


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """This process's samples, in a JSON-ready form."""
    return [
        [m.name, m.type, m.documentation, [[s.name, s.labels, s.value] for s in m.samples]] for m in registry.collect()
    ]


def merge(local: list[Family], others: Iterable[list[Family]]) -> list[Metric]:
    """`local` with every sibling's samples added in (see the module's rule); families keep local order."""
    order: list[str] = []
    kinds: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    labels_of: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, str]] = {}

    def add(families: list[Family], first: bool) -> None:
        for name, kind, doc, samples in families:
            if name not in values:
                order.append(name)
                kinds[name] = (kind, doc)
                values[name] = {}
            elif not first and kind == "gauge" and name not in SUMMED_GAUGES:
                continue  # a per-node gauge: the answering worker's reading stands
            into = values[name]
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(sorted(labels.items())))
                labels_of.setdefault(key, labels)
                into[key] = into.get(key, 0.0) + float(value)

    add(local, True)
    for families in others:
        add(families, False)
    out: list[Metric] = []
    for name in order:
        kind, doc = kinds[name]
        metric = Metric(name, doc, kind)
        for key, value in values[name].items():
            metric.add_sample(key[0], labels_of[key], value)
        out.append(metric)
    return out


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class Exposition:
    """Renders /metrics: this registry alone, or merged with the siblings' samples when `siblings` is set
    (by the worker set-up in app/serve.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.siblings: Callable[[], Awaitable[list[list[Family]]]] | None = None

    async def render(self) -> bytes:
        if self.siblings is None:
            return generate_latest(self.registry)
        local = snapshot(self.registry)
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Fixed(merge(local, await self.siblings())))
        return generate_latest(merged)
