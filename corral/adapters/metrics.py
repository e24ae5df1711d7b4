"""Prometheus metrics: every collector in one class on an injected registry.

Per-request metrics are recorded by `observe(record)` at the end of a request (an observer, not calls
sprinkled through the logic), into lock-free counters and histograms (`metric_types.py`: all of them are
updated on the event loop thread). Per-node state (up, breaker, in flight, loaded models and their VRAM) is
read from the fleet at scrape time by a custom collector, so it costs nothing per request.
Label values come only from closed sets: route templates, configured node names, models the fleet
knows (anything else is `other`), status classes and ErrorKind values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.adapters.metric_types import PlainCounter, PlainHistogram
from corral.domain.names import normalize
from corral.domain.record import RequestRecord

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 3, 5, 10, 20, 30, 60, 120)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1)
SPEED_BUCKETS = (1, 2.5, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
LOAD_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
CACHE_RESULTS = {"responses": ("hit", "miss", "bypass"), "embeddings": ("hit", "miss", "partial", "bypass")}
REJECTION_REASONS = (
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "token_limited",
    "concurrency_limited",
    "queue_full",
    "queue_timeout",
)
_MODEL_LOAD_THRESHOLD_S = 0.05  # a load_duration above this means the request waited for a model load


class NodeState(Protocol):
    """What the scrape-time collector reads of each node."""

    @property
    def name(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def up(self) -> bool: ...
    @property
    def breaker_state(self) -> str: ...
    @property
    def draining(self) -> bool: ...
    def loaded_models(self) -> Iterable[tuple[str, int, int]]: ...  # (model, size, size_vram)
    @property
    def labels(self) -> Mapping[str, str]: ...  # backends[].labels


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "none"


class _FleetCollector(Collector):
    def __init__(self, nodes: Callable[[], Iterable[NodeState]], queue_len: Callable[[], int]) -> None:
        self._nodes = nodes
        self._queue_len = queue_len

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("corral_node_up", "1 when the node passes its health checks.", labels=["node"])
        draining = GaugeMetricFamily("corral_node_draining", "1 when the node takes no new requests.", labels=["node"])
        breaker = GaugeMetricFamily(
            "corral_node_breaker_state",
            "Circuit breaker state of the node (1 for the current state).",
            labels=["node", "state"],
        )
        in_flight = GaugeMetricFamily(
            "corral_node_in_flight_requests", "Requests in flight to the node.", labels=["node"]
        )
        loaded = GaugeMetricFamily(
            "corral_node_model_loaded",
            "1 for each model loaded on the node (/api/ps).",
            labels=["node", "model"],
        )
        vram = GaugeMetricFamily(
            "corral_node_model_vram_bytes",
            "VRAM held by a loaded model (/api/ps size_vram).",
            labels=["node", "model"],
        )
        nodes = list(self._nodes())
        # Label names come from the configuration (validated there), never from clients.
        keys = sorted({key for node in nodes for key in node.labels})
        info = GaugeMetricFamily(
            "corral_node_info", "1 per node, with its node-group labels (backends[].labels).", labels=["node", *keys]
        )
        total_in_flight = 0
        for node in nodes:
            info.add_metric([node.name, *(node.labels.get(k, "") for k in keys)], 1.0)
            up.add_metric([node.name], 1.0 if node.up else 0.0)
            draining.add_metric([node.name], 1.0 if node.draining else 0.0)
            for state in ("closed", "open", "half_open"):
                breaker.add_metric([node.name, state], 1.0 if node.breaker_state == state else 0.0)
            in_flight.add_metric([node.name], float(node.in_flight))
            total_in_flight += node.in_flight
            for model, _size, size_vram in node.loaded_models():
                loaded.add_metric([node.name, model], 1.0)
                vram.add_metric([node.name, model], float(size_vram))
        yield from (info, up, draining, breaker, in_flight, loaded, vram)
        yield GaugeMetricFamily("corral_in_flight_requests", "Requests in flight to any node.", value=total_in_flight)
        yield GaugeMetricFamily(
            "corral_queue_length", "Requests waiting in the admission queue.", value=self._queue_len()
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry, per_key: bool = False) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the exposition for nothing an alert uses
        self.registry = registry
        self.per_key = per_key
        self.known_models: Callable[[], frozenset[str]] = frozenset
        self.requests = PlainCounter(
            "corral_requests",
            "Requests answered, by route, model, node and status class.",
            ["route", "model", "node", "status_class"],
            registry=registry,
        )
        self.latency = PlainHistogram(
            "corral_request_duration_seconds",
            "Whole request latency.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = PlainHistogram(
            "corral_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ["model", "node"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.itl = PlainHistogram(
            "corral_inter_token_latency_seconds",
            "Mean time between tokens of a stream.",
            ["model", "node"],
            buckets=ITL_BUCKETS,
            registry=registry,
        )
        self.tokens = PlainCounter(
            "corral_tokens",
            "Tokens processed, by kind (prompt or completion).",
            ["model", "node", "kind"],
            registry=registry,
        )
        self.speed = PlainHistogram(
            "corral_generation_tokens_per_second",
            "Completion tokens per second of a request.",
            ["model", "node"],
            buckets=SPEED_BUCKETS,
            registry=registry,
        )
        self.queue_wait = PlainHistogram(
            "corral_queue_wait_seconds",
            "Time requests waited for a free node slot.",
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.model_loads = PlainCounter(
            "corral_model_loads",
            "Requests that had to wait for a model load.",
            ["node", "model"],
            registry=registry,
        )
        self.model_load_duration = PlainHistogram(
            "corral_model_load_duration_seconds",
            "Model load time seen by requests.",
            ["node", "model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.retries = PlainCounter(
            "corral_retries",
            "Requests retried on another node before any byte was sent.",
            ["route"],
            registry=registry,
        )
        self.errors = PlainCounter(
            "corral_errors", "Requests that ended in an error, by kind.", ["route", "kind"], registry=registry
        )
        self.rejections = PlainCounter(
            "corral_rejections",
            "Requests refused by auth or limits, by reason.",
            ["reason"],
            registry=registry,
        )
        self.limit_store_errors = PlainCounter(
            "corral_limit_store_errors", "Limit checks that could not reach the limit store.", registry=registry
        )
        self._reloads = PlainCounter(
            "corral_config_reloads", "Configuration reloads, by result (ok, error).", ["result"], registry=registry
        )
        for result in ("ok", "error"):
            self._reloads.labels(result)
        self._cache_size: Callable[[], int | None] | None = None
        self.cache_requests = PlainCounter(
            "corral_cache_requests",
            "Requests that consulted a cache, by kind (responses, embeddings) and result "
            "(hit, miss, partial: some inputs cached, bypass: the client asked for a fresh answer).",
            ["kind", "result"],
            registry=registry,
        )
        self.fallbacks = PlainCounter(
            "corral_fallbacks",
            "Requests a fallback model served, by the model asked for and the one that served.",
            ["from", "to"],
            registry=registry,
        )
        self.health_checks = PlainHistogram(
            "corral_health_check_duration_seconds",
            "Health check latency.",
            ["node", "result"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def config_reloads(self, result: str) -> None:
        self._reloads.labels(result).inc()

    def preset(self, routes: Iterable[str]) -> None:
        """Export zero for label values from closed sets, so alerts and dashboards see the series
        before the first event (an absent series reads as "no data", not 0)."""
        for kind, results in CACHE_RESULTS.items():
            for result in results:
                self.cache_requests.labels(kind, result)
        for route in routes:
            self.retries.labels(route)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)

    def watch_fleet(self, nodes: Callable[[], Iterable[NodeState]], queue_len: Callable[[], int]) -> None:
        self.registry.register(_FleetCollector(nodes, queue_len))

    def _model(self, record: RequestRecord) -> str:
        # The model that served (an alias resolved, a fallback taken), else the name asked for.
        asked = record.served_model or record.model
        if asked is None:
            return "none"
        name = normalize(asked)
        return name if name in self.known_models() else "other"

    def observe(self, record: RequestRecord) -> None:
        model = self._model(record)
        node = record.node or "none"
        self.requests.labels(record.route, model, node, status_class(record.status)).inc()
        self.latency.labels(record.route, model).observe(record.latency)
        if record.attempts > 1:
            self.retries.labels(record.route).inc(record.attempts - 1)
        if record.error_kind is not None:
            self.errors.labels(record.route, record.error_kind.value).inc()
        if record.fallback_from is not None and record.served_model is not None:
            # Both names come from models.<name>.fallbacks in the configuration: a closed set.
            self.fallbacks.labels(record.fallback_from, record.served_model).inc()
        if record.queued_s:
            self.queue_wait.observe(record.queued_s)
        if record.ttft is not None and record.stream:
            self.ttft.labels(model, node).observe(record.ttft)
        prompt, completion = record.prompt_tokens, record.completion_tokens
        if prompt:
            self.tokens.labels(model, node, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, node, "completion").inc(completion)
            generating = record.latency - (record.ttft or 0.0)
            if generating > 0:
                self.speed.labels(model, node).observe(completion / generating)
                if record.stream and completion > 1:
                    self.itl.labels(model, node).observe(generating / (completion - 1))
        if record.load_s is not None and record.load_s > _MODEL_LOAD_THRESHOLD_S:
            self.model_loads.labels(node, model).inc()
            self.model_load_duration.labels(node, model).observe(record.load_s)

    def cache_counted(self, kind: str, result: str) -> None:
        self.cache_requests.labels(kind, result).inc()

    def watch_cache(self, size: Callable[[], int | None]) -> None:
        """`corral_cache_bytes`: what the in-memory cache holds, read at scrape time."""
        if self._cache_size is None:
            self.registry.register(_CacheCollector(lambda: self._cache_size() if self._cache_size else None))
        self._cache_size = size  # a reload may hand over a new store; one collector reads the latest

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def health_check(self, node: str, ok: bool, seconds: float) -> None:
        self.health_checks.labels(node, "ok" if ok else "fail").observe(seconds)


class _CacheCollector(Collector):
    def __init__(self, size: Callable[[], int | None]) -> None:
        self.size = size

    def collect(self) -> Iterator[Metric]:
        held = self.size()
        if held is not None:
            yield GaugeMetricFamily("corral_cache_bytes", "Bytes held by the in-memory cache.", value=held)
