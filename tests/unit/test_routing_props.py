"""Routing never picks a node it must not, and says exactly why when it picks none."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView, NoRoute, NoRouteReason, Pick, RouteRequest
from corral.domain.routing import ModelAware, make_strategy

MODELS = ["a:1b", "b:1b", "c:1b"]
STRATEGIES = ["round-robin", "least-connections", "priority", "power-of-two", "model-aware"]

node_views = st.builds(
    NodeView,
    name=st.sampled_from([f"n{i}" for i in range(6)]),
    up=st.booleans(),
    admits=st.booleans(),
    draining=st.booleans(),
    priority=st.integers(0, 2),
    max_concurrency=st.one_of(st.none(), st.integers(1, 3)),
    pinned=st.one_of(st.none(), st.frozensets(st.sampled_from(MODELS))),
    available=st.frozensets(st.sampled_from(MODELS)),
    loaded=st.lists(st.builds(LoadedModel, model=st.sampled_from(MODELS)), max_size=3).map(tuple),
    in_flight=st.integers(0, 4),
)


def allowed(node: NodeView, req: RouteRequest) -> bool:
    return (
        node.serves(req.model)
        and node.eligible
        and node.name not in req.exclude
        and (node.max_concurrency is None or node.in_flight < node.max_concurrency)
    )


@given(
    st.lists(node_views, max_size=6, unique_by=lambda n: n.name),
    st.sampled_from(MODELS),
    st.frozensets(st.sampled_from([f"n{i}" for i in range(6)])),
    st.sampled_from(STRATEGIES),
)
def test_never_a_forbidden_node_and_the_right_reason(
    nodes: list[NodeView], model: str, exclude: frozenset[str], name: str
) -> None:
    req = RouteRequest(model=model, exclude=exclude)
    decision = make_strategy(name, random.Random(0)).pick(nodes, req, 0.0)
    if isinstance(decision, Pick):
        node = next(n for n in nodes if n.name == decision.node)
        assert allowed(node, req)
        if name == "priority":
            assert node.priority == max(n.priority for n in nodes if allowed(n, req))
        return
    assert isinstance(decision, NoRoute)
    assert not any(allowed(n, req) for n in nodes)
    if not any(n.serves(model) for n in nodes):
        assert decision.reason is NoRouteReason.NO_SUCH_MODEL
    elif not any(n.serves(model) and n.eligible and n.name not in exclude for n in nodes):
        assert decision.reason is NoRouteReason.NO_HEALTHY_NODE
    else:
        assert decision.reason is NoRouteReason.ALL_FULL


def test_model_aware_prefers_a_warm_node_with_a_free_slot() -> None:
    warm = NodeView(
        "warm",
        available=frozenset(MODELS),
        loaded=(LoadedModel("a:1b"),),
        parallel=2,
        in_flight=1,
        in_flight_by_model={"a:1b": 1},
    )
    cold = NodeView("cold", available=frozenset(MODELS))
    strategy = ModelAware()
    for _ in range(5):
        assert strategy.pick([cold, warm], RouteRequest("a:1b"), 0.0) == Pick("warm")
    # Changed load-time options are a reload: the warm runner no longer counts.
    assert strategy.pick([warm, cold], RouteRequest("a:1b", options_key="num_ctx=8192"), 0.0).node == "cold"


def test_model_aware_spreads_once_the_warm_node_is_saturated() -> None:
    warm = NodeView(
        "warm",
        available=frozenset(MODELS),
        loaded=(LoadedModel("a:1b"),),
        parallel=1,
        in_flight=3,
        in_flight_by_model={"a:1b": 3},
    )
    cold = NodeView("cold", available=frozenset(MODELS))
    assert ModelAware().pick([warm, cold], RouteRequest("a:1b"), 0.0) == Pick("cold", cold=True)


def test_affinity_sticks_to_the_same_node() -> None:
    nodes = [
        NodeView(f"n{i}", available=frozenset(MODELS), loaded=(LoadedModel("a:1b"),), parallel=4) for i in range(3)
    ]
    strategy = ModelAware()
    first = strategy.pick(nodes, RouteRequest("a:1b", affinity="session-1"), 0.0)
    assert isinstance(first, Pick)
    for _ in range(5):
        assert strategy.pick(nodes, RouteRequest("a:1b", affinity="session-1"), 0.0) == first
