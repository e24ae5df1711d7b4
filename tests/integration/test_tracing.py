"""OpenTelemetry: a span per request and a child span per upstream attempt, exported over OTLP/HTTP
to a receiver, with W3C trace context continued from the client and passed on to the node."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from procs import sim_stats, start_corral, start_sim, wait_for

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Receiver(ThreadingHTTPServer):
    spans: list[Any]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.server.spans.extend(scope.spans)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_spans_and_trace_context_reach_the_collector_and_the_node(receiver: Receiver) -> None:
    sim = start_sim("m:1b", extra=["--tokens-per-second", "500", "--load-seconds", "0"])
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    corral = start_corral(
        {
            "backends": [{"name": "n", "url": sim.url}],
            "tracing": {"enabled": True, "endpoint": endpoint, "export_delay_ms": 100},
        }
    )
    try:
        traceparent = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"
        reply = httpx.post(
            corral.url + "/api/generate",
            headers={"traceparent": traceparent},
            json={"model": "m:1b", "prompt": "x", "stream": False, "options": {"num_predict": 3}},
        )
        assert reply.status_code == 200
        sent = sim_stats(sim)["last_headers"]["traceparent"]
        assert sent.split("-")[1] == CLIENT_TRACE
        wait_for(lambda: len(receiver.spans) >= 2, 10, "two spans at the collector")
        by_name = {s.name: s for s in receiver.spans}
        request = by_name["POST /api/generate"]
        attempt = by_name["upstream n"]
        assert request.trace_id.hex() == attempt.trace_id.hex() == CLIENT_TRACE
        assert attempt.parent_span_id == request.span_id
        assert sent.split("-")[2] == attempt.span_id.hex()
        attributes = {a.key: a.value for a in request.attributes}
        assert attributes["corral.model"].string_value == "m:1b"
        assert attributes["corral.node"].string_value == "n"
        assert attributes["corral.completion_tokens"].int_value == 3
    finally:
        corral.stop()
        sim.stop()
