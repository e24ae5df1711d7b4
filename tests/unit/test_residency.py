"""The residency controller's decisions (corral.domain.residency), as properties over random fleets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView
from corral.domain.residency import PIN, Residency, ResidencyParams

MODELS = ("a", "b", "c", "d")


def service(_node: NodeView, _model: str) -> float:
    return 2.0  # seconds a request holds a slot


@st.composite
def fleets(draw: st.DrawFn) -> list[NodeView]:
    nodes = []
    for i in range(draw(st.integers(1, 5))):
        loaded = draw(st.lists(st.sampled_from(MODELS), unique=True, max_size=3))
        busy = {m: draw(st.integers(0, 6)) for m in loaded}
        nodes.append(
            NodeView(
                name=f"n{i}",
                up=draw(st.booleans()) or i == 0,
                draining=draw(st.booleans()) and i > 0,
                parallel=2,
                max_loaded=3,
                available=frozenset(draw(st.lists(st.sampled_from(MODELS), min_size=1, unique=True))) | set(loaded),
                loaded=tuple(LoadedModel(m, digest=m) for m in loaded),
                in_flight=sum(busy.values()),
                in_flight_by_model=busy,
            )
        )
    return nodes


@settings(max_examples=300, deadline=None)
@given(fleets(), st.lists(st.tuples(st.sampled_from(MODELS), st.floats(0, 30)), max_size=200))
def test_a_preload_goes_only_where_the_model_can_be_and_is_not(
    nodes: list[NodeView], arrivals: list[tuple[str, float]]
) -> None:
    controller = Residency()
    for model, at in sorted(arrivals, key=lambda x: x[1]):
        controller.observe(model, at)
    actions = controller.decide(nodes, service, 30.0)
    by_name = {n.name: n for n in nodes}
    preloads = [a for a in actions if a.kind == "preload"]
    assert len({a.model for a in preloads}) == len(preloads)  # one replica at a time per model
    for a in preloads:
        node = by_name[a.node]
        assert node.eligible and node.serves(a.model)
        assert not any(m.model == a.model for m in node.loaded)
        assert a.keep_alive == PIN
    for a in actions:
        assert controller.rate(a.model, 30.0) >= controller.p.min_rate  # never for a model nobody asks for
    # Asking again at once changes nothing: a preload must have time to load.
    assert not [a for a in controller.decide(nodes, service, 30.5) if a.kind == "preload"]


def node(name: str, loaded: tuple[str, ...], busy: dict[str, int] | None = None, up: bool = True) -> NodeView:
    busy = busy or {}
    return NodeView(
        name=name,
        up=up,
        parallel=2,
        max_loaded=2,
        available=frozenset(MODELS),
        loaded=tuple(LoadedModel(m, digest=m) for m in loaded),
        in_flight=sum(busy.values()),
        in_flight_by_model=busy,
    )


def test_a_hot_model_gets_a_replica_in_free_room_is_pinned_and_unpinned_when_it_cools() -> None:
    controller = Residency(ResidencyParams(cool_s=30.0))
    for i in range(60):  # 3 requests/s for 20 s, against one replica serving 2 slots / 2 s = 1/s
        controller.observe("a", i / 3)
    fleet = [node("n0", ("a",), {"a": 3}), node("n1", ("b",)), node("n2", ("b", "c"))]
    actions = controller.decide(fleet, service, 20.0)
    assert [(x.kind, x.node) for x in actions] == [("pin", "n0"), ("preload", "n1")]  # n2 is full
    assert controller.pinned() == {"a": ["n0", "n1"]}
    fleet[1] = node("n1", ("b", "a"))
    quiet = [node("n0", ("a",)), fleet[1], fleet[2]]
    assert controller.decide(quiet, service, 60.0) == []  # cooling starts
    unpins = controller.decide(quiet, service, 91.0)
    assert sorted((x.kind, x.node, x.keep_alive) for x in unpins) == [("unpin", "n0", "5m"), ("unpin", "n1", "5m")]
    assert controller.pinned() == {}


def test_no_replica_by_eviction_while_the_fleet_has_lost_a_node() -> None:
    controller = Residency()
    for i in range(60):
        controller.observe("a", i / 3)
    full = [node("n0", ("a",), {"a": 3}), node("n1", ("b", "c")), node("n2", ("d",), up=False)]
    assert not [x for x in controller.decide(full, service, 20.0) if x.kind == "preload"]
    healthy = [full[0], full[1], node("n2", ("c", "d"))]
    controller = Residency()
    for i in range(60):
        controller.observe("a", i / 3)
    # b, c and d get no requests, and the fleet is not busy: evicting an idle one is free.
    assert [x.node for x in controller.decide(healthy, service, 20.0) if x.kind == "preload"] == ["n1"]


def test_a_model_in_use_alone_on_a_node_is_not_evicted_for_another() -> None:
    controller = Residency()
    for i in range(60):
        controller.observe("a", i / 3)
        controller.observe("b", i / 3)  # b keeps its one replica busy enough
    fleet = [node("n0", ("a",), {"a": 3}), node("n1", ("b", "c"))]
    # n1's victim in Ollama's order is b (idle now, but in use): the replica is not made there.
    assert not [x for x in controller.decide(fleet, service, 20.0) if x.kind == "preload" and x.model == "a"]
