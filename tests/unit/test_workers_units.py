"""Pure parts of the worker set-up: slot shares, the metrics and status merges, the worker settings, what
crosses the worker channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from corral.adapters.keystore import KeyRecord, KeySpec, record_from_json, record_json
from corral.adapters.metrics_merge import merge, snapshot
from corral.app.replica_status import merge_status
from corral.app.workers import worker_settings
from corral.config import ConfigError, Settings, load_settings
from corral.domain.keys import Role
from corral.domain.shares import share, spec_share


@given(st.integers(1, 512), st.integers(1, 64))
def test_shares_add_up_to_the_budget_and_never_leave_a_worker_without_a_slot(total: int, count: int) -> None:
    parts = [share(total, k, count) for k in range(count)]
    assert min(parts) >= 1
    assert max(parts) - min(parts) <= 1  # even
    assert sum(parts) == max(total, count)  # exact, unless there are fewer slots than workers


@given(st.integers(1, 64), st.one_of(st.none(), st.integers(1, 256)), st.integers(1, 8))
def test_a_stored_node_is_shared_out_like_a_yaml_node(parallel: int, cap: int | None, count: int) -> None:
    spec = {"name": "n", "url": "http://127.0.0.1:1", "parallel": parallel, "max_concurrency": cap}
    parts = [spec_share(spec, k, count) for k in range(count)]
    assert sum(int(p["parallel"]) for p in parts) == max(parallel, count)  # type: ignore[call-overload]
    if cap is not None:
        assert sum(int(p["max_concurrency"]) for p in parts) == max(cap, count)  # type: ignore[call-overload]
    assert all(p["url"] == spec["url"] and p["name"] == "n" for p in parts) and spec["parallel"] == parallel


def test_share_refuses_an_index_out_of_range() -> None:
    with pytest.raises(ValueError):
        share(4, 2, 2)


def registry(requests: float, in_flight: float, up: float, latency: list[float]) -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("corral_requests", "r", ["route"], registry=reg).labels("/api/chat").inc(requests)
    Gauge("corral_in_flight_requests", "f", registry=reg).set(in_flight)
    Gauge("corral_node_up", "u", ["node"], registry=reg).labels("a").set(up)
    h = Histogram("corral_request_duration_seconds", "d", buckets=(0.1, 1.0), registry=reg)
    for value in latency:
        h.observe(value)
    return reg


def value(text: str, row: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(row + " ")).rsplit(" ", 1)[1])


def test_merge_sums_counters_histograms_and_work_gauges_and_reads_node_gauges_once() -> None:
    local = registry(3, 1, 1, [0.05])
    other = registry(4, 2, 0, [0.5, 2.0])
    merged = CollectorRegistry()

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return merge(snapshot(local), [snapshot(other)])

    merged.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(merged).decode()
    assert value(text, 'corral_requests_total{route="/api/chat"}') == 7
    assert value(text, "corral_in_flight_requests") == 3
    assert value(text, 'corral_node_up{node="a"}') == 1  # the answering worker's reading, not a sum
    assert value(text, 'corral_request_duration_seconds_bucket{le="0.1"}') == 1
    assert value(text, 'corral_request_duration_seconds_bucket{le="1.0"}') == 2
    assert value(text, 'corral_request_duration_seconds_bucket{le="+Inf"}') == 3
    assert value(text, "corral_request_duration_seconds_count") == 3


def test_worker_settings_divide_node_slots_and_carry_the_bound_port() -> None:
    settings = Settings.model_validate(
        {"backends": [{"name": "a", "url": "http://h:1", "parallel": 5, "max_concurrency": 9}], "server": {"port": 0}}
    )
    ones = [worker_settings(settings, k, 2, 4321) for k in range(2)]
    assert [s.backends[0].parallel for s in ones] == [3, 2]
    assert [s.backends[0].max_concurrency for s in ones] == [5, 4]
    assert all(s.server.port == 4321 for s in ones)


def test_worker_settings_divide_the_slots_of_discovered_nodes_too(tmp_path: Path) -> None:
    dns = {"services": [{"name": "fleet.test", "port": 11434, "max_concurrency": 4, "parallel": 3}]}
    files = [{"path": str(tmp_path / "nodes.yaml"), "max_concurrency": 1}]
    settings = Settings.model_validate({"discovery": {"dns": dns, "files": files}})
    ones = [worker_settings(settings, k, 2, 4321) for k in range(2)]
    service = [s.discovery.dns.services[0] for s in ones]
    assert [x.max_concurrency for x in service] == [2, 2] and [x.parallel for x in service] == [2, 1]
    assert [s.discovery.files[0].max_concurrency for s in ones] == [1, 1]  # never below one slot
    assert [s.discovery.files[0].parallel for s in ones] == [1, 1]


def test_several_workers_with_memory_limits_are_refused_with_the_setting_to_add() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, server={"workers": 2}, limits={"global_rpm": 100})
    assert caught.value.problems[0][0] == "limits.redis_url"
    assert "limits.global_rpm" in caught.value.problems[0][1]
    assert load_settings(None, server={"workers": 2}, limits={"global_rpm": 100, "redis_url": "redis://r:6379/0"})
    assert load_settings(None, server={"workers": 1}, limits={"global_rpm": 100})


def _node(name: str, in_flight: int, requests: int, cap: int | None) -> dict[str, Any]:
    return {"name": name, "state": "up", "in_flight": in_flight, "requests_total": requests,
            "failures_total": 0, "completion_tokens_total": 0, "ttft_sum_s": 0.5, "ttft_count": 1,
            "max_concurrency": cap}  # fmt: skip


@given(st.integers(1, 64), st.integers(1, 8), st.lists(st.integers(0, 50), min_size=8, max_size=8))
def test_the_replica_status_adds_up_each_workers_share(cap: int, count: int, counts: list[int]) -> None:
    """/internal/status with workers: the in-flight counts, counters and queues of every worker, and the
    slot shares back to the node's cap (one share each, when the cap is below the worker count)."""
    views: list[Any] = []
    for k in range(count):
        nodes = [_node("a", counts[k], 10 * counts[k], share(cap, k, count)), _node("b", 1, 1, None)]
        views.append({"nodes": nodes, "queue": {"waiting": counts[k]}, "ready": True})
    merged = merge_status(views[0], [*views[1:], "a worker that answered nonsense"])
    a, b = merged["nodes"]
    assert a["in_flight"] == sum(counts[:count]) and a["requests_total"] == 10 * sum(counts[:count])
    assert a["max_concurrency"] == max(cap, count) and b["max_concurrency"] is None
    assert b["ttft_count"] == count and merged["queue"]["waiting"] == sum(counts[:count])
    assert merged["ready"] is True


def test_the_replica_status_shows_the_residency_of_the_worker_whose_controller_acts() -> None:
    idle = {"enabled": True, "pinned": {}}
    acting = {"enabled": True, "pinned": {"m:1b": ["a", "b"]}}
    own = {"nodes": [], "queue": {"waiting": 0}, "residency": idle}
    assert merge_status(own, [{"nodes": [], "queue": {"waiting": 0}, "residency": acting}])["residency"] == acting
    assert merge_status({**own, "residency": acting}, [{"nodes": [], "queue": {"waiting": 0}}])["residency"] == acting


def test_a_key_record_crosses_the_worker_channel_unchanged() -> None:
    spec = KeySpec("app", Role.ADMIN, ("llama3.2:1b", "qwen*"), 60, 1000, 4, 5, 2e9, {"team": "search"})
    for record in (KeyRecord(spec, "crl_abcd1234", 1.7e9), KeyRecord(KeySpec("old"), "crl_x", 1.0, 2.0)):
        assert record_from_json(orjson.loads(orjson.dumps(record_json(record)))) == record
