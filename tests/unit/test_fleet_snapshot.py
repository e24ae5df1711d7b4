"""The fleet's snapshot is renewed one node at a time (corral/app/fleet.py), and never goes stale."""

from __future__ import annotations

from corral.app.fleet import Fleet, Node
from corral.config import BackendSettings, HealthSettings
from corral.domain.breaker import CircuitBreaker
from corral.domain.fleet import LoadedModel


def make(count: int = 3) -> tuple[Fleet, list[Node]]:
    fleet = Fleet()
    nodes = []
    for i in range(count):
        settings = BackendSettings(name=f"n{i}", url=f"http://127.0.0.1:{20000 + i}")
        node = fleet.add(settings, HealthSettings(), CircuitBreaker(failure_threshold=1, cooldown_s=10))
        node.set_tags({"m:1b": {"name": "m:1b", "size": 1000}})
        nodes.append(node)
    return fleet, nodes


def test_only_the_changed_node_gets_a_new_view() -> None:
    fleet, nodes = make()
    before = fleet.snapshot(0.0)
    nodes[1].begin("m:1b")
    after = fleet.snapshot(0.1)
    assert after[0] is before[0] and after[2] is before[2]  # unchanged views are reused
    assert after[1].in_flight == 1 and after[1].in_flight_by_model == {"m:1b": 1}
    nodes[1].end("m:1b")
    assert fleet.snapshot(0.2)[1].in_flight == 0


def test_residency_drain_models_and_health_changes_show_at_once() -> None:
    fleet, nodes = make()
    fleet.snapshot(0.0)
    nodes[0].loaded = (LoadedModel("m:1b"),)
    nodes[1].draining = True
    nodes[2].set_tags({"m:1b": {"name": "m:1b"}, "other:7b": {"name": "other:7b"}})
    views = fleet.snapshot(0.1)
    assert views[0].loaded == (LoadedModel("m:1b"),)
    assert views[1].draining
    assert "other:7b" in views[2].available
    nodes[0].health.force(False)
    fleet.capacity_changed()  # what discovery does on a health change
    assert not fleet.snapshot(0.2)[0].up


def test_a_breaker_and_a_refusal_that_change_with_time_are_seen_without_any_event() -> None:
    fleet, nodes = make()
    nodes[0].breaker.record_failure(0.0)  # opens (threshold 1) for 10 s
    nodes[0].begin("")  # the failed attempt's node event
    assert not fleet.snapshot(1.0)[0].admits
    assert fleet.snapshot(11.0)[0].admits  # the cool-down passed: nothing told the fleet, it still sees it
    nodes[1].refuse("m:1b", 0.0)
    assert "m:1b" in fleet.snapshot(1.0)[1].unfit
    assert "m:1b" not in fleet.snapshot(10_000.0)[1].unfit


def test_nodes_added_removed_and_reordered() -> None:
    fleet, nodes = make()
    fleet.snapshot(0.0)
    fleet.remove("n1")
    assert [v.name for v in fleet.snapshot(0.1)] == ["n0", "n2"]
    fleet.reorder(["n2", "n0"])
    nodes[2].begin("m:1b")
    assert [(v.name, v.in_flight) for v in fleet.snapshot(0.2)] == [("n2", 1), ("n0", 0)]


def test_the_path_of_a_node_url_prefixes_its_requests_and_follows_new_settings() -> None:
    fleet = Fleet()
    node = fleet.add(
        BackendSettings(name="p", url="http://127.0.0.1:20000/ollama/"), HealthSettings(), CircuitBreaker()
    )
    assert node.path_prefix == b"/ollama"
    node.settings = BackendSettings(name="p", url="http://127.0.0.1:20000/v2/ollama")  # a reload's new settings
    assert node.path_prefix == b"/v2/ollama"
    node.settings = BackendSettings(name="p", url="http://127.0.0.1:20000")
    assert node.path_prefix == b""
