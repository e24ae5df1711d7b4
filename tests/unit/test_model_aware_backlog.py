"""Model-aware routing in a saturated fleet: a request whose model has a copy queues there rather than
evict a runner that has its own queue, which would hand one backlog's node to another and add a load
on top (`Costs.saturated_keeps_queues`, off by default: docs/benchmarks.md, "Backlogs left where they
are")."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.fleet import NodeView, Pick, RouteRequest
from corral.domain.model_aware import Costs, ModelAware
from tests.unit.one_runner import one_runner

MODELS = frozenset({"x:7b", "y:7b", "z:7b"})


def node(name: str, model: str, busy: int, parallel: int = 1) -> NodeView:
    return one_runner(name, model, busy, MODELS, parallel)


def test_a_backlogged_model_does_not_take_the_node_of_another_backlog() -> None:
    # x has 20 requests on its one slot, y 3 on its own: every slot is taken. Without the rule, x's
    # next request evicts y (y's three drain, then x loads); with it, it queues behind x's own.
    picks = {}
    for keeps in (True, False):
        strategy = ModelAware(Costs(saturated_keeps_queues=keeps))
        fleet = [node("a", "x:7b", 20), node("b", "y:7b", 3)]
        picks[keeps] = strategy.pick(fleet, RouteRequest("x:7b", est_tokens=300), 100.0)
    assert picks == {True: Pick("a"), False: Pick("b", cold=True)}


def test_a_runner_busy_within_its_slots_can_still_make_room() -> None:
    # y has one request in flight on its one slot, none queued: evicting it waits for that one only.
    strategy = ModelAware(Costs(saturated_keeps_queues=True))
    fleet = [node("a", "x:7b", 20), node("b", "y:7b", 1)]
    assert strategy.pick(fleet, RouteRequest("x:7b", est_tokens=300), 100.0) == Pick("b", cold=True)


def test_a_model_with_no_copy_still_loads_where_every_runner_has_a_queue() -> None:
    # z is loaded nowhere and every node's runner has a queue: it has nothing else, so it loads.
    strategy = ModelAware(Costs(saturated_keeps_queues=True))
    fleet = [node("a", "x:7b", 20), node("b", "y:7b", 3)]
    pick = strategy.pick(fleet, RouteRequest("z:7b", est_tokens=300), 100.0)
    assert isinstance(pick, Pick) and pick.cold


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(MODELS)), st.integers(1, 30), st.sampled_from([1, 2, 4])),
        min_size=2,
        max_size=20,
    ),
    st.sampled_from(sorted(MODELS)),
)
def test_in_a_saturated_fleet_no_copy_is_taken_from_a_queue(spec: list[tuple[str, int, int]], model: str) -> None:
    # Every slot of every node is taken (saturated). Whenever the asked model has a copy, the pick is
    # one of its copies or a node whose runner has no queue beyond its slots.
    fleet = [node(f"n{i}", m, max(busy, parallel), parallel) for i, (m, busy, parallel) in enumerate(spec)]
    pick = ModelAware(Costs(saturated_keeps_queues=True)).pick(fleet, RouteRequest(model, est_tokens=300), 100.0)
    assert isinstance(pick, Pick)
    if any(n.loaded[0].model == model for n in fleet):
        chosen = next(n for n in fleet if n.name == pick.node)
        held = chosen.loaded[0].model
        assert held == model or chosen.in_flight_by_model[held] <= chosen.parallel
    elif any(n.in_flight_by_model[n.loaded[0].model] <= n.parallel for n in fleet):
        # No copy: it loads, and where some runner has no queue, it evicts one of those.
        chosen = next(n for n in fleet if n.name == pick.node)
        assert pick.cold and chosen.in_flight_by_model[chosen.loaded[0].model] <= chosen.parallel
