"""Model-aware routing on mixed node sizes: never a model to a node it cannot fit, small models kept
off the only home of a big model in use (corral/domain/homes.py), and a cold model's requests batched
behind the load under way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.model_aware import Costs, ModelAware

GB = 2**30
SIZES = {"tiny:1b": 1 * GB, "small:8b": 5 * GB, "mid:32b": 20 * GB, "big:70b": 42 * GB, "huge:70b": 42 * GB}
MODELS = frozenset(SIZES)


def node(name: str, vram_gb: int, loaded: dict[str, int], parallel: int = 2) -> NodeView:
    return NodeView(
        name,
        available=MODELS,
        model_sizes=SIZES,
        parallel=parallel,
        max_loaded=3,
        vram_bytes=vram_gb * GB,
        loaded=tuple(LoadedModel(m, size=int(SIZES[m] * 1.2), digest=m) for m in loaded),
        in_flight=sum(loaded.values()),
        in_flight_by_model={m: k for m, k in loaded.items() if k},
    )


fleets = st.lists(
    st.tuples(
        st.sampled_from([12, 24, 48, 80]),
        st.dictionaries(st.sampled_from(sorted(SIZES)), st.integers(0, 3), max_size=3),
    ),
    min_size=1,
    max_size=24,  # beyond 16 nodes the per-model index and bounded scans decide
)


@settings(max_examples=150, deadline=None)
@given(fleets, st.lists(st.sampled_from(sorted(SIZES)), min_size=1, max_size=12))
def test_never_sends_a_model_to_a_node_it_cannot_fit(spec: list[tuple[int, dict[str, int]]], asks: list[str]) -> None:
    nodes = [node(f"n{i}", gb, loaded) for i, (gb, loaded) in enumerate(spec)]
    strategy = ModelAware()
    for t, model in enumerate(asks):  # one strategy across decisions: its own loads and queues count
        pick = strategy.pick(nodes, RouteRequest(model, est_tokens=300), float(t))
        assert isinstance(pick, Pick)
        chosen = next(n for n in nodes if n.name == pick.node)
        if any(n.vram_bytes is not None and SIZES[model] <= n.vram_bytes for n in nodes):
            assert chosen.vram_bytes is not None and SIZES[model] <= chosen.vram_bytes


def test_a_small_model_is_kept_off_the_only_home_of_a_big_model_in_use() -> None:
    # The 80 GB node is the only one the 70B fits, and it has room for another runner; the 24 GB nodes
    # would have to evict an idle runner for the 8B. Free room wins, unless the 70B is in use there.
    fleet = [node("big", 80, {"big:70b": 1}), *(node(f"s{i}", 24, {"tiny:1b": 0, "mid:32b": 0}) for i in range(2))]
    idle = ModelAware()
    assert idle.pick(fleet, RouteRequest("small:8b"), 1.0) == Pick("big", cold=True)
    strategy = ModelAware()
    assert strategy.pick(fleet, RouteRequest("big:70b"), 0.0) == Pick("big")
    assert strategy.pick(fleet, RouteRequest("small:8b"), 1.0) in (Pick("s0", cold=True), Pick("s1", cold=True))


def test_the_only_home_still_serves_a_small_model_when_nowhere_else_can() -> None:
    strategy = ModelAware()
    fleet = [node("big", 80, {"big:70b": 1}), node("s0", 12, {"tiny:1b": 2}, parallel=2)]
    strategy.pick(fleet, RouteRequest("big:70b"), 0.0)
    assert strategy.pick(fleet, RouteRequest("mid:32b"), 1.0) == Pick("big", cold=True)  # fits only there


def test_a_cold_models_requests_wait_for_the_load_under_way_instead_of_evicting_elsewhere() -> None:
    # Without the stability charge, only the batching rule keeps the next requests off the other nodes,
    # where an idle runner has since made a load look cheaper than the one waiting for busy victims.
    strategy = ModelAware(Costs(stability_loads=0.0))
    busy = {"tiny:1b": 4, "small:8b": 4, "mid:32b": 4}
    fleet = [node(f"n{i}", 80, busy, parallel=4) for i in range(4)]
    first = strategy.pick(fleet, RouteRequest("huge:70b", est_tokens=500), 0.0)
    assert isinstance(first, Pick) and first.cold
    idle = {"tiny:1b": 4, "small:8b": 4, "mid:32b": 0}
    for k in range(1, 4):  # as many as the loading copy has slots: the load starts them together
        fleet = [node(n.name, 80, {**busy, "huge:70b": k} if n.name == first.node else idle, parallel=4) for n in fleet]
        assert strategy.pick(fleet, RouteRequest("huge:70b", est_tokens=500), 0.1 * k) == Pick(first.node)
