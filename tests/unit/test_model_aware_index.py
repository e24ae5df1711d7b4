"""Model-aware routing in big fleets decides from a per-model index kept up to date node by node: it
must never pick a node the full filter (`candidates`) would refuse, nor miss the reason it gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.candidates import candidates
from corral.domain.fleet import LoadedModel, NodeView, NoRoute, Pick, RouteRequest
from corral.domain.fleet_index import FleetIndex
from corral.domain.model_aware import ModelAware

GB = 1_000_000_000
MODELS = ["a:7b", "b:7b", "c:7b", "big:70b"]
SIZES = {"a:7b": 4 * GB, "b:7b": 4 * GB, "c:7b": 4 * GB, "big:70b": 40 * GB}


runners = st.builds(LoadedModel, model=st.sampled_from(MODELS))


def renewed(view: NodeView, **changes: object) -> NodeView:
    return NodeView(**{**{f: getattr(view, f) for f in NodeView.__slots__}, **changes})  # type: ignore[arg-type]


def views(count: int) -> st.SearchStrategy[list[NodeView]]:
    one = st.builds(
        NodeView,
        name=st.just(""),
        up=st.sampled_from([True, True, True, False]),
        admits=st.sampled_from([True, True, True, False]),
        draining=st.sampled_from([False, False, False, True]),
        max_concurrency=st.one_of(st.none(), st.integers(1, 6)),
        parallel=st.integers(1, 4),
        vram_bytes=st.sampled_from([None, 24 * GB, 80 * GB]),
        pinned=st.one_of(st.none(), st.frozensets(st.sampled_from(MODELS), min_size=1)),
        available=st.frozensets(st.sampled_from(MODELS), min_size=1),
        loaded=st.lists(runners, max_size=3, unique_by=lambda m: m.model).map(tuple),
        in_flight_by_model=st.dictionaries(st.sampled_from(MODELS), st.integers(0, 6), max_size=3),
        labels=st.sampled_from([{}, {"pool": "x"}, {"pool": "y"}]),
    )
    return st.lists(one, min_size=count, max_size=count).map(
        lambda ns: [
            NodeView(
                f"n{i}",
                up=n.up,
                admits=n.admits,
                draining=n.draining,
                max_concurrency=n.max_concurrency,
                parallel=n.parallel,
                vram_bytes=n.vram_bytes,
                pinned=n.pinned,
                available=n.available,
                loaded=n.loaded,
                in_flight=sum(n.in_flight_by_model.values()),
                in_flight_by_model=n.in_flight_by_model,
                model_sizes=SIZES,
                labels=n.labels,
            )
            for i, n in enumerate(ns)
        ]
    )


requests = st.builds(
    RouteRequest,
    model=st.sampled_from(MODELS),
    exclude=st.frozensets(st.sampled_from([f"n{i}" for i in range(40)]), max_size=20),
    nodes=st.sampled_from([None, {"pool": "x"}]),
    key_nodes=st.sampled_from([None, {"pool": "y"}, {}]),
    est_tokens=st.integers(1, 4000),
)


@settings(max_examples=60, deadline=None)
@given(views(40), st.lists(st.tuples(st.integers(0, 39), requests), min_size=1, max_size=6), st.booleans(), st.data())
def test_a_big_fleet_is_routed_within_what_the_full_filter_allows(
    nodes: list[NodeView], steps: list[tuple[int, RouteRequest]], refusal: bool, data: st.DataObject
) -> None:
    if refusal:  # a node refused the big model for memory: the full filter's rules apply
        nodes[7] = renewed(nodes[7], unfit=frozenset({"big:70b"}))
    strategy = ModelAware()
    for t, (changed, req) in enumerate(steps):
        # Between decisions one node's view is renewed (a request began, a poll came): the index follows.
        replacement = data.draw(views(1))[0]
        nodes[changed] = renewed(replacement, name=f"n{changed}")
        decision = strategy.pick(nodes, req, float(t))
        allowed = candidates(nodes, req)
        if isinstance(allowed, NoRoute):
            assert decision == allowed
        else:
            assert isinstance(decision, Pick)
            assert decision.node in {n.name for n in allowed}


def test_the_index_follows_renewed_views_and_a_changed_fleet() -> None:
    def node(name: str, loaded: tuple[str, ...], max_loaded: int = 3) -> NodeView:
        return NodeView(name, loaded=tuple(LoadedModel(m) for m in loaded), max_loaded=max_loaded)

    index = FleetIndex()
    fleet = [node("a", ("x",)), node("b", ("x", "y", "z")), node("c", ())]
    index.update(fleet)
    assert index.holders(("x", "")) == (0, 1) and index.roomy() == (0, 2)
    fleet[0] = node("a", ("y", "z", "w"))  # a poll: x gone from a, which is full now
    index.update(fleet)
    assert index.holders(("x", "")) == (1,) and index.holders(("y", "")) == (1, 0) and index.roomy() == (2,)
    index.update([fleet[2], fleet[1]])  # nodes added or removed: indexed anew
    assert index.holders(("x", "")) == (1,) and index.positions == {"c": 0, "b": 1}
