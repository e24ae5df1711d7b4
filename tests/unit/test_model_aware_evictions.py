"""Model-aware routing: what an eviction leaves behind. A model in use with no other copy to take its
traffic strands the requests that arrive for it while it is reloaded, so evicting a model that gets a
request or more per reload time costs more than evicting a quiet one (corral/domain/evictions.py,
`_stranded`; off by default: `Costs.victim_queue`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.model_aware import Costs, ModelAware

GB = 1_000_000_000
MODELS = frozenset({"hot:7b", "quiet:7b", "new:7b"})
SIZES = {m: 4 * GB for m in MODELS}
CHARGED = Costs(victim_queue=1.0)


def full(name: str, model: str) -> NodeView:
    """A node with room for one runner, holding `model`, idle."""
    return NodeView(
        name,
        available=MODELS,
        model_sizes=SIZES,
        parallel=1,
        max_loaded=1,
        loaded=(LoadedModel(model, size=5 * GB),),
    )


def warmed(strategy: ModelAware, hot: int, quiet: int) -> float:
    """`hot` requests for hot:7b and `quiet` for quiet:7b within the last minute, side by side, each
    model on its own node (its only copy); returns the time after them."""
    t = 0.0
    for i in range(hot):
        assert strategy.pick([full("a", "hot:7b")], RouteRequest("hot:7b"), t) == Pick("a")
        if i < quiet:
            assert strategy.pick([full("b", "quiet:7b")], RouteRequest("quiet:7b"), t) == Pick("b")
        t += 0.5
    return t


@settings(max_examples=60, deadline=None)
@given(st.integers(30, 60), st.integers(1, 60), st.booleans())
def test_the_model_with_more_demand_is_not_the_one_evicted(hot: int, quiet: int, swap: bool) -> None:
    # Both runners are in use and the only copies of their models: either eviction costs a reload and
    # the stability charge. What differs is how many requests arrive for each while it reloads: `hot`
    # in half a minute is more than one per reload (about 3 s for these 4 GB models).
    quiet = min(quiet, hot - 1)
    strategy = ModelAware(CHARGED)
    t = warmed(strategy, hot, quiet)
    nodes = [full("a", "hot:7b"), full("b", "quiet:7b")]
    pick = strategy.pick(nodes[::-1] if swap else nodes, RouteRequest("new:7b"), t)
    assert pick == Pick("b", cold=True)


@pytest.mark.parametrize(
    ("costs", "hot"),
    [
        (Costs(), 40),  # the charge off (the default)
        (CHARGED, 8),  # 8 requests a minute: fewer than one per 3 s reload, so nobody is stranded
    ],
)
def test_without_stranded_requests_the_choice_is_a_tie(costs: Costs, hot: int) -> None:
    # The two nodes weigh alike: which one loses its model then depends on the order of the nodes, not
    # on the demand (so the charge is what decides above).
    picks = set()
    for swap in (False, True):
        strategy = ModelAware(costs)
        t = warmed(strategy, hot, 1)
        nodes = [full("a", "hot:7b"), full("b", "quiet:7b")]
        pick = strategy.pick(nodes[::-1] if swap else nodes, RouteRequest("new:7b"), t)
        assert isinstance(pick, Pick)
        picks.add(pick.node)
    assert picks == {"a", "b"}
