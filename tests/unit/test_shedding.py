"""Shedding by estimated wait (`queue.shed_after_s`, docs/routing.md): the setting, the bound each model of
a fallback chain gets, model-aware's refusal with its estimate, and the 503 the client is sent."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from corral.app.admission import no_route_error
from corral.app.naming import ModelTargets
from corral.config import ConfigError, ModelPolicy, load_settings
from corral.domain.catalog import Catalog
from corral.domain.errors import ErrorKind, NoHealthyNode, Overloaded
from corral.domain.fleet import NodeView, NoRoute, NoRouteReason, Pick, RouteRequest
from corral.domain.model_aware import ModelAware
from tests.unit.one_runner import one_runner

MODELS = frozenset({"a:7b", "b:7b"})


def refusal(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    return dict(err.value.problems)


def test_shedding_is_off_unless_set(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {port: 8080}\n")
    assert load_settings(path).queue.shed_after_s is None
    path.write_text("queue: {shed_after_s: 10}\n")
    assert load_settings(path).queue.shed_after_s == 10.0


def test_shedding_with_a_strategy_that_estimates_no_wait_is_refused_naming_the_key(tmp_path: Path) -> None:
    problems = refusal(tmp_path, "routing: {strategy: least-connections}\nqueue: {shed_after_s: 10}\n")
    assert set(problems) == {"queue.shed_after_s"}
    assert "model-aware" in problems["queue.shed_after_s"]


@pytest.mark.parametrize("bad", ["0", "-5", "soon", ".inf", ".nan"])
def test_a_bound_that_is_not_a_positive_number_is_refused(tmp_path: Path, bad: str) -> None:
    assert set(refusal(tmp_path, f"queue: {{shed_after_s: {bad}}}\n")) == {"queue.shed_after_s"}


def chain(shed: float | None, fallback_after: float | None) -> list[tuple[float | None, float | None]]:
    """(max_wait_s, shed_after_s) of each model of a.7b -> b:7b -> c:7b (only a:7b has fallback_after_s)."""
    policies = {
        "a:7b": ModelPolicy(fallbacks=["b:7b", "c:7b"], fallback_after_s=fallback_after),
        "b:7b": ModelPolicy(fallback_after_s=None),
    }
    targets = ModelTargets(Catalog.build({}, {}), policies, shed)
    first, rest = targets.chain(RouteRequest("a:7b", shed_after_s=targets.shed_after_s), lambda _: True)
    return [(r.max_wait_s, r.shed_after_s) for r in (first, *rest)]


def test_every_model_of_a_chain_is_shed_under_the_bound_and_falls_back_after_its_own() -> None:
    assert chain(None, None) == [(None, None)] * 3
    assert chain(None, 5.0) == [(5.0, None), (None, None), (None, None)]  # today's fallback_after_s alone
    assert chain(10.0, 5.0) == [(5.0, 10.0), (None, 10.0), (None, 10.0)]
    assert chain(10.0, None) == [(None, 10.0)] * 3


def test_a_busy_only_copy_is_shed_with_its_estimated_wait() -> None:
    strategy = ModelAware()
    # A long generation takes the only slot of the only copy: what is queued there is its work.
    assert strategy.pick([one_runner("n", "a:7b", 0, MODELS)], RouteRequest("a:7b", est_tokens=2000), 0.0) == Pick("n")
    busy = [one_runner("n", "a:7b", 1, MODELS)]
    refused = strategy.pick(busy, RouteRequest("a:7b", shed_after_s=1.0), 0.1)
    assert isinstance(refused, NoRoute) and refused.reason is NoRouteReason.SHED
    assert refused.wait_s is not None and refused.wait_s > 1.0
    # A bound above the estimate lets it queue there.
    assert strategy.pick(busy, RouteRequest("a:7b", shed_after_s=refused.wait_s + 1), 0.1) == Pick("n")
    # Under a fallback's tighter bound the same wait is TOO_SLOW: the next model is tried, not shed.
    slow = strategy.pick(busy, RouteRequest("a:7b", max_wait_s=1.0, shed_after_s=60.0), 0.1)
    assert isinstance(slow, NoRoute) and slow.reason is NoRouteReason.TOO_SLOW


def test_a_free_slot_is_never_shed() -> None:
    strategy = ModelAware()
    free = one_runner("free", "a:7b", 0, MODELS)
    assert strategy.pick([free], RouteRequest("a:7b", shed_after_s=1e-9), 0.0) == Pick("free")
    # Beside a busy copy, the free one is picked however tight the bound.
    busy = one_runner("busy", "a:7b", 1, MODELS)
    free = one_runner("free", "a:7b", 0, MODELS)
    assert strategy.pick([busy, free], RouteRequest("a:7b", shed_after_s=1e-9), 0.1) == Pick("free")


def test_a_shed_request_gets_a_503_saying_how_long_and_when_to_retry() -> None:
    route = RouteRequest("a:7b", shed_after_s=10.0)
    err = no_route_error(NoRoute(NoRouteReason.SHED, 41.2), "a:7b", route)
    assert isinstance(err, Overloaded) and err.status == 503 and err.kind is ErrorKind.OVERLOADED
    assert err.message.startswith("server busy, please try again.")  # as Ollama's own (server/sched.go)
    assert "'a:7b' would wait about 42s" in err.message and "queue.shed_after_s is 10s" in err.message
    assert err.retry_after == 32  # the excess over the bound
    far = no_route_error(NoRoute(NoRouteReason.SHED, 900.0), "a:7b", route)
    near = no_route_error(NoRoute(NoRouteReason.SHED, 10.01), "a:7b", route)
    assert (far.retry_after, near.retry_after) == (60, 1)


def test_a_fallback_bound_keeps_its_own_error() -> None:
    route = RouteRequest("a:7b", max_wait_s=2.0, shed_after_s=10.0)  # fallback_after_s 2 under shedding at 10
    err = no_route_error(NoRoute(NoRouteReason.TOO_SLOW, 5.0), "a:7b", route)
    assert type(err) is NoHealthyNode and "fallback_after_s" in err.message


def test_a_model_no_node_holds_is_loaded_whatever_the_bound() -> None:
    """Its first load is the only way it is ever served: shedding it would refuse the model for good.
    The next request weighs that load's remaining time like any queue, and is shed."""
    strategy = ModelAware()
    cold = [one_runner("n", "b:7b", 0, MODELS)]  # holds another model: a:7b must be loaded
    first = strategy.pick(cold, RouteRequest("a:7b", shed_after_s=1e-3), 0.0)
    assert first == Pick("n", cold=True)
    again = strategy.pick(cold, RouteRequest("a:7b", shed_after_s=1e-3), 0.1)
    assert isinstance(again, NoRoute) and again.reason is NoRouteReason.SHED  # its load is under way
    # A fallback's bound is what it was: fall back rather than wait for the load.
    fresh = ModelAware()
    slow = fresh.pick(cold, RouteRequest("a:7b", max_wait_s=1e-3, shed_after_s=60.0), 0.0)
    assert isinstance(slow, NoRoute) and slow.reason is NoRouteReason.TOO_SLOW


def test_a_queued_request_offered_a_slot_behind_too_much_work_is_shed_not_kept() -> None:
    """The admission queue's offer round (a slot freed at the gateway) refuses a waiting request whose
    wait on the node's copy is over the bound, with the same 503 as on arrival, at once."""
    from corral.app.admission import Admission
    from corral.app.build import make_breaker
    from corral.app.fleet import Fleet
    from corral.config import BackendSettings, HealthSettings
    from corral.domain.fleet import LoadedModel
    from corral.domain.record import RequestRecord

    async def body() -> None:
        fleet = Fleet()
        settings = BackendSettings(name="n", url="http://127.0.0.1:1", max_concurrency=2, parallel=1)
        node = fleet.add(settings, HealthSettings(), make_breaker())
        node.set_tags({"m:1b": {"name": "m:1b", "size": 1_000_000_000}})
        node.loaded = (LoadedModel("m:1b"),)
        admission = Admission(fleet, ModelAware(), 10, 60.0)
        record = RequestRecord("r", "POST", "/api/chat", "127.0.0.1", 0.0)
        # Two long generations, sent before shedding applied to them: the node's cap is reached.
        for _ in range(2):
            assert await admission.choose(RouteRequest("m:1b", est_tokens=100_000), record) is node
        waiting = asyncio.ensure_future(admission.choose(RouteRequest("m:1b", shed_after_s=1.0), record))
        await asyncio.sleep(0)  # one turn of the loop: it is queued (every node at its cap)
        assert admission.waiting == 1 and not waiting.done()
        node.end("m:1b")  # a slot at the gateway, but the copy still has one long generation ahead
        admission.capacity_changed(node)
        with pytest.raises(Overloaded, match="would wait about"):  # not the queue's timeout, 1 s later
            await waiting

    asyncio.run(body())


def roomy(name: str, model: str, busy: int) -> NodeView:
    """A node holding `model` with room for a second model beside it (nothing to evict)."""
    return replace(one_runner(name, model, busy, MODELS), max_loaded=2)


def test_a_load_into_free_room_is_taken_rather_than_shedding_however_long_the_load() -> None:
    """The cheapest pick is a busy copy (a short queue, cheaper than a load) whose wait is over the
    bound; a node with free room would start the request only after a load several times the bound,
    but a load's own time does not count against it: without that, a model whose load takes longer
    than the bound could never get a second copy."""

    def primed() -> ModelAware:
        strategy = ModelAware()
        strategy.pick([one_runner("n", "a:7b", 0, MODELS)], RouteRequest("a:7b", est_tokens=50), 0.0)
        return strategy

    fleet = [one_runner("n", "a:7b", 1, MODELS), roomy("m", "b:7b", 0)]
    assert primed().pick(fleet, RouteRequest("a:7b"), 0.1) == Pick("n")  # no bound: the copy's queue
    assert primed().pick(fleet, RouteRequest("a:7b", shed_after_s=0.3), 0.1) == Pick("m", cold=True)


def test_a_load_that_evicts_a_busy_model_is_not_taken_to_avoid_shedding() -> None:
    """Evicting another model's busy runner costs its requests more than the bound saves this one: the
    request is shed instead (SHED), its wait being the soonest start the router knows of."""

    def fleet(busy: int) -> list[NodeView]:
        return [one_runner("n", "a:7b", busy, MODELS), one_runner("m", "b:7b", busy, MODELS)]

    def primed() -> ModelAware:
        strategy = ModelAware()  # a long generation on each node's only slot
        strategy.pick(fleet(0), RouteRequest("a:7b", est_tokens=1600), 0.0)
        strategy.pick(fleet(0), RouteRequest("b:7b", est_tokens=1600), 0.0)
        return strategy

    within = primed().pick(fleet(1), RouteRequest("a:7b", shed_after_s=20.0), 0.1)
    assert within == Pick("n")  # the copy's mean wait (14 s) is within 20 s
    refused = primed().pick(fleet(1), RouteRequest("a:7b", shed_after_s=10.0), 0.1)
    assert isinstance(refused, NoRoute) and refused.reason is NoRouteReason.SHED
    assert refused.wait_s is not None and 10.0 < refused.wait_s < 20.0


def test_a_first_copy_waiting_on_other_work_past_the_bound_is_shed() -> None:
    """The first load's own time is exempt, not what it waits for: here the only node must first let a
    long generation of the model it would evict finish."""

    def primed() -> ModelAware:
        strategy = ModelAware()
        strategy.pick([one_runner("m", "b:7b", 0, MODELS)], RouteRequest("b:7b", est_tokens=1600), 0.0)
        return strategy

    busy = [one_runner("m", "b:7b", 1, MODELS)]
    refused = primed().pick(busy, RouteRequest("a:7b", shed_after_s=1.0), 0.1)
    assert isinstance(refused, NoRoute) and refused.reason is NoRouteReason.SHED
    assert refused.wait_s is not None and refused.wait_s > 5.0  # the drain, then the load
    assert primed().pick(busy, RouteRequest("a:7b", shed_after_s=refused.wait_s), 0.1) == Pick("m", cold=True)


@pytest.mark.parametrize("size", [4, 40])  # the full filter, and the per-model index of a big fleet
def test_a_copy_only_on_a_draining_node_does_not_count_as_held(size: int) -> None:
    """The first-copy exemption asks whether an eligible node holds the model: a draining node's copy
    will take nothing, so the model's first load elsewhere goes ahead; an eligible busy copy means the
    request is shed instead."""
    others = [one_runner(f"n{i}", "b:7b", 0, MODELS) for i in range(size)]

    def pick(holder: NodeView) -> Pick | NoRoute:
        strategy = ModelAware()
        strategy.pick([holder], RouteRequest("a:7b", est_tokens=1600), 0.0)  # a long generation there
        busy = replace(holder, in_flight=1, in_flight_by_model={"a:7b": 1})
        return strategy.pick([*others, busy], RouteRequest("a:7b", shed_after_s=1e-3), 0.1)

    shed = pick(one_runner("h", "a:7b", 0, MODELS))
    assert isinstance(shed, NoRoute) and shed.reason is NoRouteReason.SHED
    loaded = pick(replace(one_runner("h", "a:7b", 0, MODELS), draining=True))
    assert isinstance(loaded, Pick) and loaded.cold and loaded.node != "h"


def test_a_copy_outside_the_keys_node_group_does_not_count_as_held() -> None:
    """The key may use only the red nodes; the model is held only on a blue one. Its first load on a
    red node goes ahead: counting the blue copy would shed the model for this key forever."""
    red = [replace(one_runner(f"r{i}", "b:7b", 0, MODELS), labels={"team": "red"}) for i in range(3)]
    blue = replace(one_runner("b", "a:7b", 1, MODELS), labels={"team": "blue"})
    route = RouteRequest("a:7b", shed_after_s=1e-3, key_nodes={"team": "red"})
    found = ModelAware().pick([*red, blue], route, 0.0)
    assert isinstance(found, Pick) and found.cold and found.node.startswith("r")
    # Excluded after a failed try, the holder does not count either: the retry loads a copy elsewhere.
    held = [*red[:2], replace(one_runner("h", "a:7b", 1, MODELS))]
    retry = ModelAware().pick(held, RouteRequest("a:7b", shed_after_s=1e-3, exclude=frozenset({"h"})), 0.0)
    assert isinstance(retry, Pick) and retry.cold and retry.node != "h"


def test_a_model_no_node_holds_is_loaded_from_the_admission_queue_too() -> None:
    """Every node at its cap: the request waits in the admission queue, and a freed slot is offered to
    it on one node. That node's view alone cannot say the model is held nowhere: the gateway looks it
    up in the whole fleet, so the model's first copy is loaded there rather than the request timing out."""
    from corral.app.admission import Admission
    from corral.app.build import make_breaker
    from corral.app.fleet import Fleet
    from corral.config import BackendSettings, HealthSettings
    from corral.domain.fleet import LoadedModel
    from corral.domain.record import RequestRecord

    async def body() -> None:
        fleet = Fleet()
        settings = BackendSettings(name="n", url="http://127.0.0.1:1", max_concurrency=1, parallel=1)
        node = fleet.add(settings, HealthSettings(), make_breaker())
        node.set_tags({"m:1b": {"name": "m:1b", "size": 1_000_000_000}, "c:1b": {"name": "c:1b", "size": 40 * 10**9}})
        node.loaded = (LoadedModel("m:1b"),)
        admission = Admission(fleet, ModelAware(), 10, 60.0)
        record = RequestRecord("r", "POST", "/api/chat", "127.0.0.1", 0.0)
        assert await admission.choose(RouteRequest("m:1b"), record) is node  # the node's one slot
        waiting = asyncio.ensure_future(admission.choose(RouteRequest("c:1b", shed_after_s=0.5), record))
        await asyncio.sleep(0)
        assert admission.waiting == 1
        node.end("m:1b")
        admission.capacity_changed(node)
        assert await asyncio.wait_for(waiting, 5) is node  # its load goes ahead, not a timeout

    asyncio.run(body())
