"""Metrics move by exactly what was sent; access logs are JSON and carry the client's request id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from procs import Proc, start_corral, start_sim, wait_for


@pytest.fixture
def pair() -> Iterator[tuple[Proc, Proc]]:
    sim = start_sim("m:1b", extra=["--tokens-per-second", "500", "--load-seconds", "0.05"])
    corral = start_corral({"backends": [{"name": "n", "url": sim.url}]})
    yield corral, sim
    corral.stop()
    sim.stop()


def samples(corral: Proc) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(corral.url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(snap: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in snap.items() if n == name and set(labels.items()) <= ls)


def test_counters_and_histograms_count_every_request(pair: tuple[Proc, Proc]) -> None:
    corral, _ = pair
    before = samples(corral)
    ok, missing, streams = 7, 3, 4
    for _ in range(ok):
        assert (
            httpx.post(
                corral.url + "/api/generate",
                json={"model": "m:1b", "prompt": "x", "stream": False, "options": {"num_predict": 2}},
            ).status_code
            == 200
        )
    for _ in range(missing):
        assert httpx.post(corral.url + "/api/generate", json={"model": "nope", "prompt": "x"}).status_code == 404
    for _ in range(streams):
        with httpx.stream(
            "POST", corral.url + "/api/generate", json={"model": "m:1b", "prompt": "x", "options": {"num_predict": 5}}
        ) as r:
            list(r.iter_lines())
    after = samples(corral)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("corral_requests_total", route="/api/generate", status_class="2xx") == ok + streams
    assert delta("corral_requests_total", route="/api/generate", status_class="4xx") == missing
    assert delta("corral_request_duration_seconds_count", route="/api/generate") == ok + missing + streams
    assert delta("corral_time_to_first_token_seconds_count", model="m:1b") == streams
    assert delta("corral_tokens_total", kind="completion", model="m:1b") == ok * 2 + streams * 5
    assert delta("corral_errors_total", kind="no_such_model") == missing
    assert value(after, "corral_node_up", node="n") == 1.0


def test_access_log_lines_are_json_with_the_clients_request_id(pair: tuple[Proc, Proc]) -> None:
    corral, _ = pair
    marker = "prompt-marker-7f3a9c"
    httpx.post(
        corral.url + "/api/chat",
        headers={"X-Request-ID": "client-req-123"},
        json={"model": "m:1b", "messages": [{"role": "user", "content": marker}], "stream": False},
    )

    def logged() -> dict[str, object] | None:
        for line in corral.output().splitlines():
            entry = json.loads(line)
            if entry.get("request_id") == "client-req-123":
                return entry
        return None

    entry = wait_for(logged, 5, "the access line")
    assert entry["logger"] == "corral.access" and entry["status"] == 200 and entry["model"] == "m:1b"
    assert entry["node"] == "n" and isinstance(entry["latency_ms"], float)
    assert marker not in corral.output()


def test_metrics_on_a_separate_listener_and_behind_a_key(tmp_path: Path) -> None:
    from procs import free_port

    sim = start_sim("m:1b", extra=["--tokens-per-second", "2000", "--load-seconds", "0"])
    port = free_port()
    corral = start_corral(
        {
            "backends": [{"name": "n", "url": sim.url}],
            "metrics": {"listen": f"127.0.0.1:{port}"},
            "auth": {"enabled": True, "store_url": f"sqlite:///{tmp_path / 'k.db'}", "metrics": "key"},
        }
    )
    try:
        assert httpx.get(corral.url + "/metrics").status_code == 401
        side = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert side.status_code == 200 and "corral_node_up" in side.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/tags").status_code == 404
    finally:
        corral.stop()
        sim.stop()


def test_no_audit_record_is_lost_on_graceful_shutdown(tmp_path: Path) -> None:
    sim = start_sim("m:1b", extra=["--tokens-per-second", "2000", "--load-seconds", "0"])
    audit = tmp_path / "audit.log"
    corral = start_corral({"backends": [{"name": "n", "url": sim.url}], "audit": {"path": str(audit)}})
    try:
        with httpx.Client() as client:
            for _ in range(40):
                client.post(corral.url + "/api/generate", json={"model": "m:1b", "prompt": "x", "stream": False})
        corral.proc.terminate()
        assert corral.proc.wait(15) == 0
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        assert sum(1 for e in lines if e["route"] == "/api/generate") == 40
    finally:
        corral.stop()
        sim.stop()


def test_access_lines_are_written_in_batches_soon_and_all_of_them_by_shutdown() -> None:
    """The access log writes its lines in batches (app/access_log.py): each line still appears within
    the linger (well under a second), once, whole, and a clean shutdown writes the last ones."""
    sim = start_sim("m:1b", extra=["--tokens-per-second", "2000", "--load-seconds", "0"])
    corral = start_corral({"backends": [{"name": "n", "url": sim.url}]})

    def ids(prefix: str) -> list[str]:
        out = []
        for line in corral.output().splitlines():
            entry = json.loads(line)  # every line whole: batches never cut a line or interleave two
            if str(entry.get("request_id", "")).startswith(prefix):
                assert entry["logger"] == "corral.access" and entry["route"] == "/api/generate"
                out.append(entry["request_id"])
        return out

    def burst(prefix: str, n: int) -> None:
        body = {"model": "m:1b", "prompt": "x", "stream": False, "options": {"num_predict": 2}}

        def one(i: int) -> int:
            headers = {"X-Request-ID": f"{prefix}-{i}"}
            return httpx.post(corral.url + "/api/generate", json=body, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(one, range(n))) == {200}

    try:
        burst("early", 100)
        wait_for(lambda: len(ids("early-")) == 100 or None, 5, "100 access lines without a shutdown")
        burst("late", 100)
        corral.proc.terminate()
        assert corral.proc.wait(15) == 0
        assert sorted(ids("late-")) == sorted(f"late-{i}" for i in range(100))
        assert len(ids("early-")) == 100
    finally:
        corral.stop()
        sim.stop()
