"""Holding a cold model's requests at the gateway (bench/policy_sim/cold_hold.py): resident models are never
held, a cold one waits only while every loader it could use is busy, a freed loader takes the model with
the most waiting requests (all of them at once), and no model waits past the age bound behind others."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.policy_sim.cold_hold import ColdHold, HoldSettings
from corral.domain.fleet import LoadedModel, NodeView, RouteRequest

MODELS = frozenset({"a", "b", "c", "hot"})


class Loaders:
    """The router's loaders as a test sets them: nodes whose loader is busy for a minute more."""

    def __init__(self, busy: set[str] | None = None) -> None:
        self.busy = busy or set()

    def loader_free_at(self, node: str, now: float) -> float:
        return now + 60.0 if node in self.busy else now


def node(name: str, loaded: tuple[str, ...] = ("hot",), **kw: object) -> NodeView:
    return NodeView(name, available=MODELS, loaded=tuple(LoadedModel(m) for m in loaded), **kw)  # type: ignore[arg-type]


FLEET = [node("n0"), node("n1")]


def test_a_request_for_a_resident_model_is_never_held_even_with_every_loader_busy() -> None:
    hold: ColdHold[int] = ColdHold()
    assert not hold.should_hold(FLEET, RouteRequest("hot"), Loaders({"n0", "n1"}), 0.0)


def test_a_model_whose_only_copy_is_on_a_node_at_its_concurrency_cap_is_not_held() -> None:
    hold: ColdHold[int] = ColdHold()
    full = [node("n0", ("hot", "a"), max_concurrency=1, in_flight=1), node("n1")]
    assert not hold.should_hold(full, RouteRequest("a"), Loaders({"n0", "n1"}), 0.0)


def test_a_copy_on_a_node_outside_the_keys_group_does_not_count() -> None:
    hold: ColdHold[int] = ColdHold()
    fleet = [node("n0", ("hot", "a"), labels={"pool": "x"}), node("n1", labels={"pool": "y"})]
    route = RouteRequest("a", key_nodes={"pool": "y"})
    assert hold.should_hold(fleet, route, Loaders({"n0", "n1"}), 0.0)


def test_a_cold_request_goes_at_once_while_some_loader_it_may_use_is_free() -> None:
    hold: ColdHold[int] = ColdHold()
    assert not hold.should_hold(FLEET, RouteRequest("a"), Loaders({"n0"}), 0.0)
    # ... but not when that free loader is on a node the request may not use.
    assert hold.should_hold(FLEET, RouteRequest("a", exclude=frozenset({"n1"})), Loaders({"n0"}), 0.0)


def test_cold_requests_wait_while_every_loader_is_busy_and_leave_together_when_one_frees() -> None:
    hold: ColdHold[int] = ColdHold()
    loaders = Loaders({"n0", "n1"})
    for i in range(3):
        assert hold.should_hold(FLEET, RouteRequest("a"), loaders, float(i))
        hold.hold(RouteRequest("a"), float(i), i)
    assert hold.next_batch(FLEET, loaders, 5.0) is None  # nothing frees: nothing leaves
    loaders.busy = {"n0"}
    batch = hold.next_batch(FLEET, loaders, 5.0)
    assert batch is not None and [h.payload for h in batch] == [0, 1, 2]  # one load serves them, oldest first
    assert len(hold) == 0


def test_a_request_for_a_model_already_held_joins_its_batch_even_if_a_loader_is_free() -> None:
    hold: ColdHold[int] = ColdHold()
    hold.hold(RouteRequest("a"), 0.0, 0)
    assert hold.should_hold(FLEET, RouteRequest("a"), Loaders(), 1.0)
    assert not hold.should_hold(FLEET, RouteRequest("b"), Loaders(), 1.0)


def test_a_freed_loader_takes_the_model_with_the_most_waiting_requests() -> None:
    hold: ColdHold[str] = ColdHold()
    hold.hold(RouteRequest("a"), 0.0, "a0")  # the oldest, alone
    for i in range(3):
        hold.hold(RouteRequest("b"), 1.0 + i, f"b{i}")
    batch = hold.next_batch(FLEET, Loaders({"n1"}), 5.0)
    assert batch is not None and [h.payload for h in batch] == ["b0", "b1", "b2"]


def test_a_model_that_waited_past_the_age_bound_goes_first_whatever_the_others_wait() -> None:
    hold: ColdHold[str] = ColdHold(HoldSettings(max_age_s=30.0))
    hold.hold(RouteRequest("a"), 0.0, "a0")
    for i in range(5):
        hold.hold(RouteRequest("b"), 20.0, f"b{i}")
    batch = hold.next_batch(FLEET, Loaders({"n1"}), 30.0)
    assert batch is not None and [h.payload for h in batch] == ["a0"]


def test_a_held_model_that_gained_a_copy_leaves_at_once_even_with_every_loader_busy() -> None:
    hold: ColdHold[int] = ColdHold()
    hold.hold(RouteRequest("a"), 0.0, 0)
    warm = [node("n0", ("hot", "a")), node("n1")]
    batch = hold.next_batch(warm, Loaders({"n0", "n1"}), 1.0)
    assert batch is not None and [h.payload for h in batch] == [0]


def test_a_request_that_left_is_removed_once() -> None:
    hold: ColdHold[int] = ColdHold()
    held = hold.hold(RouteRequest("a"), 0.0, 0)
    assert hold.remove(held) and not hold.remove(held)
    assert len(hold) == 0 and hold.next_batch(FLEET, Loaders(), 1.0) is None


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 5)), min_size=1, max_size=30))
def test_every_held_request_leaves_exactly_once_and_none_waits_behind_others_past_the_age_bound(
    arrivals: list[tuple[str, float]],
) -> None:
    settings = HoldSettings(max_age_s=10.0)
    hold: ColdHold[int] = ColdHold(settings)
    now = 0.0
    for i, (model, gap) in enumerate(arrivals):
        now += gap
        hold.hold(RouteRequest(model), now, i)
    left: list[int] = []
    # One loader frees per 2 s; each time, the batch that goes must include any model past the bound
    # before a younger one.
    t = now
    while len(hold):
        t += 2.0
        oldest: dict[str, float] = {}
        for h in hold:
            oldest[h.route.model] = min(h.since, oldest.get(h.route.model, h.since))
        batch = hold.next_batch(FLEET, Loaders({"n1"}), t)
        assert batch is not None
        model = batch[0].route.model
        aged = [m for m, since in oldest.items() if t - since >= settings.max_age_s]
        if aged:
            assert model in aged
        left += [h.payload for h in batch]
    assert sorted(left) == list(range(len(arrivals)))
