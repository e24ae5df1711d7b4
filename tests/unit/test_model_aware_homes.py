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


def test_free_room_on_the_only_home_of_a_big_model_in_use_is_not_discounted() -> None:
    # Nothing has a free slot for the 8B, so a load into free room gets the replica discount; the 80 GB
    # node has such room, but it is the only home of the 70B, busy there. A queue of 12 on the 8B's own
    # copies is shorter than the 70B's reload (the homes charge), though longer than a third of it:
    # only with the charge paid in full does the 8B queue where it is instead of crowding the 70B.
    def fleet() -> list[NodeView]:
        return [node("big", 80, {"big:70b": 2}), *(node(f"s{i}", 24, {"small:8b": 12}) for i in range(2))]

    picks = {}
    for full in (True, False):
        strategy = ModelAware(Costs(homes_full=full))
        strategy.pick(fleet(), RouteRequest("big:70b", est_tokens=300), 0.0)
        picks[full] = strategy.pick(fleet(), RouteRequest("small:8b", est_tokens=300), 1.0)
    assert picks[True] in (Pick("s0"), Pick("s1"))
    assert picks[False] == Pick("big", cold=True)


def test_a_big_node_the_big_model_does_not_use_keeps_the_discount_for_free_room() -> None:
    # Two 80 GB nodes: the 70B is busy on one; the other is empty. With the 8B's copies queued as above,
    # its new copy goes into the empty one's free room: room the big model is not using there is spare.
    fleet = [
        node("big", 80, {"big:70b": 1}),
        node("spare", 80, {}),
        *(node(f"s{i}", 24, {"small:8b": 12}) for i in range(2)),
    ]
    strategy = ModelAware(Costs(homes_full=True))
    assert strategy.pick(fleet, RouteRequest("big:70b", est_tokens=300), 0.0) == Pick("big")
    assert strategy.pick(fleet, RouteRequest("small:8b", est_tokens=300), 1.0) == Pick("spare", cold=True)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 2, 4]))
def test_a_small_model_crowds_a_big_models_only_home_only_when_its_own_queue_is_longer_than_the_reload(
    queued_a: int, queued_b: int, parallel: int
) -> None:
    # Whatever the queues on the 8B's copies: it is loaded onto the 70B's only home (where there is free
    # room) only when waiting on its own copies would take at least the 70B's reload, the homes charge.
    fleet = [
        node("big", 80, {"big:70b": 2}),
        node("s0", 24, {"small:8b": queued_a}, parallel=parallel),
        node("s1", 24, {"small:8b": queued_b}, parallel=parallel),
    ]
    strategy = ModelAware(Costs(homes_full=True))
    strategy.pick(fleet, RouteRequest("big:70b", est_tokens=300), 0.0)
    pick = strategy.pick(fleet, RouteRequest("small:8b", est_tokens=300), 1.0)
    assert isinstance(pick, Pick)
    if pick.node == "big":
        charge = strategy.costs.stability_loads * strategy.load_s(fleet[0], "big:70b")
        waits = [strategy.costs.queue_weight * strategy.wait_s(n, "small:8b", 1.0) for n in fleet[1:]]
        assert min(waits) >= charge


def test_a_free_slot_beside_a_queued_big_model_is_no_free_slot() -> None:
    # The 8B has a free slot on the 80 GB node, the 70B's only home, where the 70B has 4 requests queued
    # beyond its slots: the GPU time an 8B request would take there is theirs (runners time-share a
    # GPU). A load on the 24 GB node, where the 70B cannot go, wins; without the rule the free slot does.
    picks = {}
    for busy in (True, False):
        strategy = ModelAware(Costs(homes_busy=busy))
        fleet = [node("big", 80, {"big:70b": 6, "small:8b": 0}), node("s0", 24, {})]
        assert strategy.pick(fleet, RouteRequest("big:70b", est_tokens=300), 0.0) == Pick("big")
        picks[busy] = strategy.pick(fleet, RouteRequest("small:8b", est_tokens=300), 1.0)
    assert picks == {True: Pick("s0", cold=True), False: Pick("big")}


def test_a_big_models_queue_on_one_home_keeps_small_models_off_its_other_homes() -> None:
    # The 70B queues on big1; big2, its other home, serves an 8B with a free slot. The 70B's last
    # decision found that queue, so an 8B request there would take GPU time the 70B may need there:
    # it goes to the 24 GB node instead.
    picks = {}
    for busy in (True, False):
        strategy = ModelAware(Costs(homes_busy=busy))
        fleet = [
            node("big1", 80, {"big:70b": 6}),
            node("big2", 80, {"small:8b": 0, "mid:32b": 2, "tiny:1b": 2}),
            node("s0", 24, {}),
        ]
        assert strategy.pick(fleet, RouteRequest("big:70b", est_tokens=300), 0.0) == Pick("big1")
        picks[busy] = strategy.pick(fleet, RouteRequest("small:8b", est_tokens=300), 1.0)
    assert picks == {True: Pick("s0", cold=True), False: Pick("big2")}
