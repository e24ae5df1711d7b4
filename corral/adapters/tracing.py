"""Optional OpenTelemetry tracing (OTLP over HTTP, off by default): a span per request and a child span
per upstream attempt, with W3C trace context sent to the node."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from corral.domain.record import RequestRecord

Headers = list[tuple[bytes, bytes]]
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    def __init__(self, endpoint: str, service_name: str, sample_ratio: float, export_delay_ms: int = 1000) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBasedTraceIdRatio(sample_ratio),
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=export_delay_ms)
        )
        self.tracer = self.provider.get_tracer("corral")

    def start_request(self, method: str, route: str, headers: Headers) -> RequestSpan:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in (b"traceparent", b"tracestate")}
        context = _PROPAGATOR.extract(carrier) if carrier else None
        span = self.tracer.start_span(f"{method} {route}", context=context, kind=SpanKind.SERVER)
        return RequestSpan(self.tracer, span)

    def shutdown(self) -> None:
        self.provider.shutdown()


class AttemptSpan:
    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def end(self, status: int | None, error: str | None) -> None:
        span = self.span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        span.end()


class RequestSpan:
    """A request's server span (corral.domain.record.RequestTrace)."""

    __slots__ = ("span", "tracer")

    def __init__(self, tracer: trace.Tracer, span: Span) -> None:
        self.tracer = tracer
        self.span = span

    def attempt(self, node: str, attempt: int) -> tuple[AttemptSpan, Headers]:
        span = self.tracer.start_span(
            f"upstream {node}",
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes={"corral.node": node, "corral.attempt": attempt},
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return AttemptSpan(span), [(k.encode(), v.encode()) for k, v in carrier.items()]

    def end(self, record: RequestRecord) -> None:
        span = self.span
        attributes: dict[str, Any] = {
            "http.route": record.route,
            "http.response.status_code": record.status,
            "corral.request_id": record.request_id,
            "corral.attempts": record.attempts,
            "corral.retries": max(0, record.attempts - 1),
        }
        for key, value in (
            ("corral.model", record.model),
            ("corral.node", record.node),
            ("corral.prompt_tokens", record.prompt_tokens),
            ("corral.completion_tokens", record.completion_tokens),
            ("corral.ttft_s", record.ttft),
            ("corral.error_kind", record.error_kind),
        ):
            if value is not None:
                attributes[key] = str(value) if key == "corral.error_kind" else value
        span.set_attributes(attributes)
        if record.status >= 500 or record.error_kind is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, record.error or ""))
        span.end(time.time_ns())
