"""Model-aware routing: when a model's queue earns it another copy at the cost of another model
(corral/domain/evictions.py, `_calm` and `_eviction_cost`; `Costs.overload` and `Costs.keep_overload`).

A model whose copies run at half their capacity or more (its last minute's requests ÷ what its copies
serve) gets a copy by evicting an idle model rather than queue on its busy copy; below that, the queue
is a passing burst and it waits. A model in use whose remaining copies would run at 58% or more keeps
its copy. Both thresholds were 60% until issue 17's thrash-70 round (docs/benchmarks.md, "Replicas
from 50%")."""

from __future__ import annotations

import pytest

from corral.domain.fleet import NodeView, Pick, RouteRequest
from corral.domain.model_aware import Costs, ModelAware
from tests.unit.one_runner import one_runner

MODELS = frozenset({"hot:7b", "other:7b"})
BEFORE = Costs(overload=0.6, keep_overload=0.6)  # the thresholds before this change
# One copy with two slots of a 4 GB model serves 2 ÷ 4.4 s (the size prior's service time) = 0.45
# requests a second: n requests in the last minute, the one being routed included, are a utilisation
# of n ÷ 60 ÷ 0.45, i.e. 50% from 14 requests and 60% from 17.


def node(name: str, model: str, busy: int = 0) -> NodeView:
    """A node with room for one runner (two slots), holding `model` with `busy` requests in flight."""
    return one_runner(name, model, busy, MODELS, parallel=2)


def warmed(costs: Costs, hot: int, other: int = 0) -> ModelAware:
    """A router that has seen `hot` requests for hot:7b (on node a) and `other` for other:7b (on nodes
    b and c in turn) within the last minute."""
    strategy = ModelAware(costs)
    for _ in range(hot):
        assert strategy.pick([node("a", "hot:7b")], RouteRequest("hot:7b"), 0.0) == Pick("a")
    for i in range(other):
        name = "bc"[i % 2]
        assert strategy.pick([node(name, "other:7b")], RouteRequest("other:7b"), 0.0) == Pick(name)
    return strategy


@pytest.mark.parametrize("seen", [13, 14, 15])
def test_a_model_at_half_its_capacity_gets_a_copy_instead_of_queueing(seen: int) -> None:
    # hot:7b's only copy has three requests for two slots; node b holds a model nobody asked for.
    # At 51-59% utilisation the queue is no passing burst: loading a copy on b beats waiting.
    nodes = [node("a", "hot:7b", busy=3), node("b", "other:7b")]
    assert warmed(Costs(), seen).pick(nodes, RouteRequest("hot:7b"), 0.0) == Pick("b", cold=True)
    # With the earlier 60% threshold the same request queued on the busy copy.
    assert warmed(BEFORE, seen).pick(nodes, RouteRequest("hot:7b"), 0.0) == Pick("a")


@pytest.mark.parametrize("seen", [5, 10, 12])
def test_below_half_its_capacity_a_model_waits_for_its_copy(seen: int) -> None:
    nodes = [node("a", "hot:7b", busy=3), node("b", "other:7b")]
    assert warmed(Costs(), seen).pick(nodes, RouteRequest("hot:7b"), 0.0) == Pick("a")


def test_a_copy_whose_model_would_be_overloaded_without_it_is_kept() -> None:
    # other:7b has two copies (b and c) and 16 requests in the last minute: on one copy that is 59%.
    # hot:7b is overloaded either way, and its queue on a is worth an eviction that costs only a reload;
    # but evicting other:7b from b would leave it at 58% or more, so hot:7b waits on a.
    nodes = [node("a", "hot:7b", busy=4), node("b", "other:7b"), node("c", "other:7b")]
    assert warmed(Costs(), 20, other=16).pick(nodes, RouteRequest("hot:7b"), 0.0) == Pick("a")
    assert warmed(BEFORE, 20, other=16).pick(nodes, RouteRequest("hot:7b"), 0.0).cold
    # A quieter other:7b (54% on one copy) gives a copy up.
    assert warmed(Costs(), 20, other=14).pick(nodes, RouteRequest("hot:7b"), 0.0).cold
