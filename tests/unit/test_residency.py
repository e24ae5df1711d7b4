"""The residency controller's decisions (corral.domain.residency), as properties over random fleets.

Its estimates are routing's own (`ModelAware`, priors only: with no request dispatched through it, a
runner's requests in flight are typical ones of the prior service time, 5 s, and a load takes 3.1 s)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView
from corral.domain.model_aware import ModelAware
from corral.domain.residency import PIN, Action, Residency, ResidencyParams

MODELS = ("a", "b", "c", "d")


def decide(controller: Residency, nodes: list[NodeView], now: float) -> list[Action]:
    """Two decisions a `hold_s` apart (a model must stay queued that long for a replica): both's actions."""
    est = ModelAware()
    return controller.decide(nodes, est, now - controller.p.hold_s) + controller.decide(nodes, est, now)


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
    est = ModelAware()
    decided = [(t, controller.decide(nodes, est, t)) for t in (30.0 - controller.p.hold_s, 30.0)]
    actions = [a for _, acts in decided for a in acts]
    by_name = {n.name: n for n in nodes}
    preloads = [a for a in actions if a.kind == "preload"]
    assert len({(a.model, a.node) for a in preloads}) == len(preloads)  # never two on one node
    for a in preloads:
        node = by_name[a.node]
        assert node.eligible and node.serves(a.model)
        assert not any(m.model == a.model for m in node.loaded)
        assert a.keep_alive == PIN
    for t, acts in decided:
        for a in acts:
            assert controller.rate(a.model, t) >= controller.p.min_rate  # never for a model nobody asks for
    # Asking again at once changes nothing: a preload must have time to load.
    assert not [a for a in controller.decide(nodes, est, 30.5) if a.kind == "preload"]


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


def turn(controller: Residency, models: tuple[str, ...], seconds: float = 20.0) -> float:
    """Five minutes of light traffic on another model, then `models` at 3 requests/s each for `seconds`
    (against one replica serving 2 slots / 2 s = 1/s): they turn hot. Returns the time at the end."""
    for i in range(60):
        controller.observe("z", i * 5.0)
    for i in range(int(seconds * 3)):
        for m in models:
            controller.observe(m, T0 + i / 3)
    return T0 + seconds


T0 = 300.0


def test_a_hot_model_gets_a_replica_in_free_room_is_pinned_and_unpinned_when_it_cools() -> None:
    controller = Residency(ResidencyParams(cool_s=30.0))
    now = turn(controller, ("a",))
    # n2 is full of runners nobody uses: it may give one up, but only after the free room on n1 is taken.
    fleet = [node("n0", ("a",), {"a": 3}), node("n1", ("b",)), node("n2", ("b", "c"))]
    actions = decide(controller, fleet, now)
    assert [(x.kind, x.node) for x in actions] == [("preload", "n1"), ("preload", "n2")]  # at once
    assert controller.pinned() == {"a": ["n1", "n2"]}  # the replicas it loaded; routing's copy on n0 is left alone
    fleet[1], fleet[2] = node("n1", ("b", "a")), node("n2", ("a", "c"))
    quiet = [node("n0", ("a",)), fleet[1], fleet[2]]
    assert controller.decide(quiet, ModelAware(), now + 40) == []  # cooling starts
    unpins = controller.decide(quiet, ModelAware(), now + 71)
    assert [(x.kind, x.node, x.keep_alive) for x in unpins] == [("unpin", "n1", "5m"), ("unpin", "n2", "5m")]
    assert controller.pinned() == {}


def test_replicas_stay_pinned_while_the_queue_needs_them() -> None:
    controller = Residency(ResidencyParams(cool_s=30.0))
    now = turn(controller, ("a",), seconds=120)
    fleet = [node("n0", ("a",), {"a": 3}), node("n1", ("b",))]
    assert [x.node for x in decide(controller, fleet, now)] == ["n1"]
    # The replica shares the load, so no copy queues, but its requests still fill both: the traffic
    # that made it hot goes on, and the replica stays pinned.
    busy = [node("n0", ("a",), {"a": 2}), node("n1", ("b", "a"), {"a": 2})]
    for t in range(1, 90, 3):
        for i in range(9):
            controller.observe("a", now + t + i / 3)
        assert controller.decide(busy, ModelAware(), now + t + 3) == []
    assert controller.pinned() == {"a": ["n1"]}


def test_steady_traffic_gets_no_replica_from_the_controller() -> None:
    # The same 3 requests/s, but for the whole five minutes: routing already placed it. (Free room on n3,
    # and other models at work: no rise, and no surge on a calm fleet.)
    controller = Residency()
    for i in range(int(T0 * 3)):
        controller.observe("a", i / 3)
    fleet = [
        node("n0", ("a",), {"a": 3}),
        node("n1", ("b",), {"b": 2}),
        node("n2", ("b", "c"), {"c": 1}),
        node("n3", ()),
    ]
    assert decide(controller, fleet, T0) == []


def test_no_replica_by_eviction_while_the_fleet_has_lost_a_node() -> None:
    controller = Residency()
    now = turn(controller, ("a",))
    full = [node("n0", ("a",), {"a": 3}), node("n1", ("b", "c")), node("n2", ("d",), up=False)]
    assert not [x for x in decide(controller, full, now) if x.kind == "preload"]
    healthy = [full[0], full[1], node("n2", ("c", "d"))]
    controller = Residency()
    now = turn(controller, ("a",))
    # b, c and d get no requests, and the fleet is not busy: evicting idle ones is free (both nodes: its
    # 3 requests a second keep far more slots busy than one replica has).
    assert [x.node for x in decide(controller, healthy, now) if x.kind == "preload"] == ["n1", "n2"]


def test_a_model_in_use_alone_on_a_node_is_not_evicted_for_another() -> None:
    controller = Residency()
    for i in range(int(T0 * 3)):
        controller.observe("b", i / 3)  # b keeps its one replica busy, all along
    now = turn(controller, ("a",))
    fleet = [node("n0", ("a",), {"a": 3}), node("n1", ("b", "c"))]
    # n1's victim in Ollama's order is b (idle now, but in use): the replica is not made there.
    assert not [x for x in decide(controller, fleet, now) if x.kind == "preload" and x.model == "a"]


GIB = 2**30
SIZES = {"a": 6 * GIB, "b": 9 * GIB, "c": 4 * GIB, "d": 12 * GIB}


@st.composite
def memory_fleets(draw: st.DrawFn) -> list[NodeView]:
    nodes = []
    for i in range(draw(st.integers(1, 4))):
        loaded: list[str] = []
        for m in draw(st.permutations(MODELS)):
            if len(loaded) < 3 and sum(SIZES[x] for x in loaded) + SIZES[m] <= 24 * GIB and draw(st.booleans()):
                loaded.append(m)
        busy = {m: draw(st.integers(0, 3)) for m in loaded}
        nodes.append(
            NodeView(
                name=f"n{i}",
                parallel=2,
                max_loaded=3,
                vram_bytes=24 * GIB,
                available=frozenset(MODELS),
                model_sizes={m: int(s / 1.3) for m, s in SIZES.items()},
                loaded=tuple(LoadedModel(m, size=SIZES[m], digest=m) for m in loaded),
                in_flight=sum(busy.values()),
                in_flight_by_model=busy,
            )
        )
    return nodes


def ollama_victims(node: NodeView, model: str, pinned: set[str]) -> list[str]:
    """What Ollama unloads to load `model` (server/sched.go): until a slot is free and it fits in 80% of
    what is left, each time the first idle runner by (keep_alive, digest), pinned ones last."""
    left = sorted(node.loaded, key=lambda m: (m.model in pinned, m.digest))
    out = []
    while left and (len(left) >= node.max_loaded or SIZES[model] > 0.8 * (24 * GIB - sum(m.size for m in left))):
        idle = [m for m in left if node.in_flight_by_model.get(m.model, 0) == 0]
        victim = (idle or left)[0]
        out.append(victim.model)
        left.remove(victim)
    return out


def _turned(turning: list[str], rate: float) -> Residency:
    """A controller that saw model "z" at a slow steady rate for five minutes, then `turning` rise to
    `rate` requests a second each for the 20 s before T0 + 20."""
    controller = Residency()
    for i in range(60):
        controller.observe("z", i * 5.0)
    for i in range(int(20 * rate)):
        for m in turning:
            controller.observe(m, T0 + i / rate)
    return controller


@settings(max_examples=300, deadline=None)
@given(memory_fleets(), st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True), st.floats(0.5, 6))
def test_a_preload_never_unloads_a_pinned_replica(nodes: list[NodeView], turning: list[str], rate: float) -> None:
    """Never more pinned than fits: what a preload makes Ollama unload is never a replica the controller
    pinned (those stay resident until it unpins them)."""
    controller = _turned(turning, rate)
    actions = decide(controller, nodes, T0 + 20)
    pinned = {(node, model) for model, where in controller.pinned().items() for node in where}
    by_name = {n.name: n for n in nodes}
    for a in actions:
        if a.kind == "preload":
            node = by_name[a.node]
            here = {m for (n, m) in pinned if n == a.node and m != a.model}
            assert not set(ollama_victims(node, a.model, here)) & here


@settings(max_examples=200, deadline=None)
@given(fleets(), st.lists(st.tuples(st.sampled_from(MODELS), st.floats(0, 60)), max_size=300))
def test_every_pin_is_released_once_its_model_cools(nodes: list[NodeView], arrivals: list[tuple[str, float]]) -> None:
    controller = Residency(ResidencyParams(cool_s=30.0))
    est = ModelAware()
    for model, at in sorted(arrivals, key=lambda x: x[1]):
        controller.observe(model, at)
        controller.decide(nodes, est, at)
    before = {(model, node) for model, where in controller.pinned().items() for node in where}
    quiet = [NodeView(n.name, up=n.up, draining=n.draining, parallel=n.parallel, max_loaded=n.max_loaded,
                      available=n.available, loaded=n.loaded) for n in nodes]  # fmt: skip
    # No requests after t=60: below `cool` within a few windows, and unpinned cool_s later.
    unpins = [a for t in (120.0, 151.0) for a in controller.decide(quiet, est, t) if a.kind == "unpin"]
    assert controller.pinned() == {}
    assert {(a.model, a.node) for a in unpins} == before
    assert all(a.keep_alive == controller.p.keep_alive for a in unpins)


@settings(max_examples=300, deadline=None)
@given(
    memory_fleets(),
    st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True),
    st.floats(0.5, 6),
    st.integers(0, 8),
    st.booleans(),
)
def test_while_the_fleet_is_busy_or_thrashing_a_preload_only_takes_free_room(
    nodes: list[NodeView], turning: list[str], rate: float, unloads: int, lost: bool
) -> None:
    """No eviction for a replica while other models keep the fleet busy, while runners come and go
    (thrash), or after a node is lost: a preload then makes Ollama unload nothing. And never more than
    one preload per node in a decision (the room seen is for one)."""
    controller = _turned(turning, rate)
    est = ModelAware()
    now = T0 + 20
    # Earlier snapshots: node n0 held runners that left it, `unloads` times (evictions Ollama made).
    for k in range(unloads):
        first = nodes[0]
        gone = LoadedModel("c", size=SIZES["c"], digest="c") if k % 2 == 0 else None
        shown = (*first.loaded, gone) if gone is not None and not any(m.model == "c" for m in first.loaded) else ()
        controller.decide([NodeView(first.name, parallel=2, max_loaded=3, loaded=shown), *nodes[1:]], est, now - 30 + k)
    if lost:
        nodes = [*nodes, NodeView("down", up=False, parallel=2, max_loaded=3, available=frozenset(MODELS))]
    preloads = []
    for t in (now - controller.p.hold_s, now):
        these = [a for a in controller.decide(nodes, est, t) if a.kind == "preload"]
        assert len({a.node for a in these}) == len(these)
        preloads += these
    live = [n for n in nodes if n.eligible]
    by_name = {n.name: n for n in nodes}
    for a in preloads:
        slots = sum(2 for n in live for m in n.loaded if m.model != a.model)
        others = sum(n.in_flight - n.in_flight_by_model.get(a.model, 0) for n in live)
        busy = others > controller.p.fleet_busy * slots
        if busy or lost or controller.thrashing(nodes):
            node = by_name[a.node]
            assert len(node.loaded) < node.max_loaded
            assert ollama_victims(node, a.model, set()) == []


def test_a_fleet_that_thrashes_gets_no_replica_by_eviction() -> None:
    controller = Residency()
    now = turn(controller, ("a",))
    healthy = [node("n0", ("a",), {"a": 3}), node("n1", ("b", "c")), node("n2", ("c", "d"))]
    est = ModelAware()
    # Runners come and go on n1 and n2 (each snapshot a different pair): more unloads than one per node.
    for k, pair in enumerate([("b", "d"), ("c", "d"), ("b", "c"), ("b", "d"), ("c", "d")]):
        controller.decide([healthy[0], node("n1", pair), node("n2", pair[::-1])], est, now - 10 + k)
    assert controller.thrashing(healthy)
    assert not [x for x in decide(controller, healthy, now) if x.kind == "preload"]


def test_a_pin_on_a_copy_that_is_gone_is_released_too() -> None:
    controller = Residency(ResidencyParams(cool_s=30.0))
    now = turn(controller, ("a",))
    fleet = [node("n0", ("a",), {"a": 3}), node("n1", ())]
    assert [(x.kind, x.node) for x in decide(controller, fleet, now)] == [("preload", "n1")]
    # Ollama unloaded every copy anyway (a client's keep_alive 0, say): the pin must not stay.
    est = ModelAware()
    empty = [node("n0", ()), node("n1", ())]
    controller.decide(empty, est, now + 1)
    unpins = controller.decide(empty, est, now + 32)
    assert [(x.kind, x.node) for x in unpins] == [("unpin", "n1")]
    assert controller.pinned() == {}


@settings(max_examples=300, deadline=None)
@given(fleets(), st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True), st.floats(0.5, 6))
def test_never_more_replicas_than_the_queue_needs(nodes: list[NodeView], turning: list[str], rate: float) -> None:
    """The replicas preloaded for a model in one decision bring its copies to at most what its queue
    needs (its demand over `fill` of a copy's slots, or the copies that share its wait out below `hot`),
    and those in free room come first: a runner is given up only once no free room is left."""
    controller = _turned(turning, rate)
    est = ModelAware()
    now = T0 + 20
    controller.decide(nodes, est, now - controller.p.hold_s)
    needs = {m: controller.needed(m, nodes, est, now) for m in MODELS}
    actions = controller.decide(nodes, est, now)
    by_name = {n.name: n for n in nodes}
    for model in MODELS:
        these = [by_name[a.node] for a in actions if a.kind == "preload" and a.model == model]
        holders = sum(1 for n in nodes if n.eligible and any(m.model == model for m in n.loaded))
        assert holders + len(these) <= max(holders, needs[model])
        free = [len(n.loaded) < n.max_loaded for n in these]
        assert free == sorted(free, reverse=True)  # free room first, evictions after


@settings(max_examples=200, deadline=None)
@given(fleets(), st.sampled_from(MODELS), st.floats(0.5, 6))
def test_a_surge_on_a_busy_or_changing_fleet_gets_no_replica(nodes: list[NodeView], model: str, rate: float) -> None:
    """A model queued without a rise over its usual rate (steady traffic, or a surge) gets a replica only
    while the other models leave the fleet idle and its runners are settled: at 70% load every model
    queues now and then, and a replica for that only moves the queue to the model it displaces."""
    controller = Residency()
    for i in range(int(T0 * rate)):
        controller.observe(model, i / rate)  # the same rate for five minutes: no rise
    est = ModelAware()
    controller.decide(nodes, est, T0 - controller.p.hold_s)
    calm = controller.calm(model, nodes)
    preloads = [a for a in controller.decide(nodes, est, T0) if a.kind == "preload" and a.model == model]
    if preloads:
        assert calm and not controller.thrashing(nodes)


def test_closed_loop_clients_queued_far_beyond_the_slots_get_replicas_on_a_calm_fleet() -> None:
    """Clients that wait for each answer never raise their rate above what the copy serves (no rise),
    but their queue shows: on an idle fleet, as many replicas as the queue needs, at once."""
    controller = Residency()
    for i in range(int(T0)):
        controller.observe("a", float(i))  # one a second all along: no rise
    fleet = [node("n0", ("a",), {"a": 9}), node("n1", ("b",)), node("n2", ("c",)), node("n3", ())]
    est = ModelAware()
    needed = controller.needed("a", fleet, est, T0)
    preloads = [x.node for x in decide(controller, fleet, T0) if x.kind == "preload"]
    assert preloads == ["n3", "n1", "n2"][: needed - 1] and len(preloads) >= 2
    # The same queue while the other models keep the fleet busy: routing's to place.
    controller = Residency()
    for i in range(int(T0)):
        controller.observe("a", float(i))
    busy = [fleet[0], node("n1", ("b",), {"b": 2}), node("n2", ("c",), {"c": 2}), node("n3", ())]
    assert not controller.calm("a", busy)
    assert [x for x in decide(controller, busy, T0) if x.kind == "preload"] == []


def test_a_turn_it_acted_on_gets_more_replicas_while_its_queue_needs_them() -> None:
    """Minutes into a turn the usual rate has caught up (no rise any more), yet the replicas it pinned
    are still needed and its copies queue again: it adds more, without waiting for a new rise."""
    controller = Residency()
    now = turn(controller, ("a",))
    fleet = [node("n0", ("a",), {"a": 3}), node("n1", ("b",))]
    assert [x.node for x in decide(controller, fleet, now)] == ["n1"]
    for i in range(600 * 3):
        controller.observe("a", now + i / 3)  # the same 3 requests/s for ten more minutes
    later = now + 600
    assert not controller.rising("a", later)
    queued = [node("n0", ("a",), {"a": 4}), node("n1", ("b", "a"), {"a": 4}), node("n2", ("c",))]
    assert [(x.kind, x.node) for x in decide(controller, queued, later)] == [("preload", "n2")]
    assert controller.pinned() == {"a": ["n1", "n2"]}
