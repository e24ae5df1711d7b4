"""Model-aware routing in a fleet bigger than `Costs.scan_nodes`: a decision weighs a shortlist of
nodes, and still finds what a full scan would (a free slot, room for a load, the least busy copy)."""

from __future__ import annotations

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.model_aware import ModelAware

GB = 1_000_000_000
MODELS = frozenset({"a:7b", "b:7b", "c:7b", "d:7b", "cold:7b"})


def node(name: str, loaded: dict[str, int], parallel: int = 2) -> NodeView:
    return NodeView(
        name,
        available=MODELS,
        model_sizes=dict.fromkeys(MODELS, 4 * GB),
        parallel=parallel,
        max_loaded=3,
        loaded=tuple(LoadedModel(m, size=5 * GB, digest=m) for m in loaded),
        in_flight=sum(loaded.values()),
        in_flight_by_model={m: k for m, k in loaded.items() if k},
    )


FULL = {"b:7b": 2, "c:7b": 2, "d:7b": 2}  # three busy runners: no room, no free slot for a:7b


def test_the_one_free_slot_in_a_big_fleet_is_found_wherever_it_is() -> None:
    nodes = [node(f"n{i}", FULL) for i in range(100)]
    nodes[73] = node("free", {"a:7b": 1, "b:7b": 2, "c:7b": 2})
    strategy = ModelAware()
    for t in range(10):
        assert strategy.pick(nodes, RouteRequest("a:7b"), float(t)) == Pick("free")
        strategy = ModelAware()  # its own dispatches aside


def test_a_cold_model_goes_to_the_node_with_room_not_into_an_eviction() -> None:
    nodes = [node(f"n{i}", FULL) for i in range(100)]
    nodes[88] = node("room", {"b:7b": 2})
    for t in range(10):
        assert ModelAware().pick(nodes, RouteRequest("cold:7b"), float(t)) == Pick("room", cold=True)


def test_with_every_copy_busy_the_least_busy_copy_is_weighed() -> None:
    # 40 copies of a:7b, every slot taken; one has a single request queued beyond its slots, the
    # rest many: it is the one to join, wherever the rotation starts.
    nodes = [node(f"n{i}", {"a:7b": 12, "b:7b": 2, "c:7b": 2}) for i in range(40)]
    nodes[29] = node("short", {"a:7b": 3, "b:7b": 2, "c:7b": 2})
    strategy = ModelAware()
    for t in range(5):
        assert strategy.pick(nodes, RouteRequest("a:7b"), float(t)).node == "short"
