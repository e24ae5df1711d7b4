"""The shortcuts a routing decision takes on a small fleet give the answers of the full computation:
the one-pass filter is `candidates` (same nodes, same order, same refusals), the ledger's free-slot
wait is its full estimate's, and a pool of one node holding the model is picked without weighing it
(same picks, same state after)."""

from __future__ import annotations

import random

import pytest

from corral.domain.candidates import candidates, candidates_holding, is_loaded
from corral.domain.fleet import LoadedModel, NodeView, NoRoute, RouteRequest
from corral.domain.ledger import Ledger
from corral.domain.model_aware import Costs, ModelAware
from corral.domain.route_costs import Option

MODELS = [f"m{i}:7b" for i in range(6)] + ["big:70b"]
SIZES = {m: 4_700_000_000 for m in MODELS} | {"big:70b": 40_000_000_000}


def _node(i: int, rng: random.Random) -> NodeView:
    loaded = tuple(LoadedModel(m, options_key=rng.choice(["", "", "ctx=8192"])) for m in rng.sample(MODELS, 2))
    cap = rng.choice([None, None, 2])
    return NodeView(
        f"n{i}",
        up=rng.random() > 0.1,
        admits=rng.random() > 0.1,
        draining=rng.random() < 0.1,
        max_concurrency=cap,
        in_flight=rng.randint(0, 3),
        vram_bytes=rng.choice([None, 24 * 2**30, 80 * 2**30]),
        pinned=frozenset(rng.sample(MODELS, 4)) if rng.random() < 0.2 else None,
        available=frozenset(rng.sample(MODELS, rng.randint(3, len(MODELS)))),
        loaded=loaded,
        model_sizes=SIZES,
        labels={"zone": rng.choice(["a", "b"])},
        unfit=frozenset({"big:70b"}) if rng.random() < 0.1 else frozenset(),
    )


@pytest.mark.parametrize("seed", range(200))
def test_the_one_pass_filter_is_candidates(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [_node(i, rng) for i in range(rng.randint(1, 16))]
    req = RouteRequest(
        rng.choice(MODELS),
        options_key=rng.choice(["", "ctx=8192"]),
        exclude=frozenset({"n0"}) if rng.random() < 0.2 else frozenset(),
        nodes={"zone": "a"} if rng.random() < 0.1 else None,
    )
    full = candidates(nodes, req)
    fused = candidates_holding(nodes, req)
    if fused is None:  # node groups, a model that does not fit somewhere, or no candidate: the full filter
        return
    free, holding = fused
    assert free == full
    assert holding == [i for i, n in enumerate(free) if is_loaded(n, req)]


def test_with_a_slot_free_the_wait_is_the_prefill_of_the_prompts_not_started() -> None:
    ledger = Ledger()
    for prompt in (1_000, 3_000, 500):
        ledger.dispatched("n", "m", prompt, 100, 0.0, ready=True)
    ledger.started("n", "m", 1.0)  # the 1,000-token prompt is done: it decodes now
    # Four slots, three requests: what a new one waits for is the 3,500 prompt tokens still ahead.
    assert ledger.unstarted_prompts("n", "m", 3) == 3_500
    assert ledger.wait("n", "m", 4, 0.01, 0.001, 2.0, (0, 0.0)) == 3_500 * 0.001
    # The gateway counts two in flight now: the oldest entry is forgotten first (`sync`).
    assert ledger.unstarted_prompts("n", "m", 2) == 3_500
    assert ledger.unstarted_prompts("n", "m", 1) == 500
    assert ledger.unstarted_prompts("n", "m", 0) == 0


class _Weighed(ModelAware):
    """The full computation: every pool weighed, one node or more."""

    def _alone(self, *args: object) -> Option | None:
        return None


def _state(router: ModelAware) -> tuple[object, ...]:
    ledger = {k: list(v) for k, v in router.ledger._runners.items()}
    loads = {n: dict(d) for n, d in router._loads.items()}
    return ledger, loads, dict(router._affinity), dict(router._last), dict(router._arrivals), dict(router._service)


@pytest.mark.parametrize("seed", range(60))
def test_a_pool_of_one_node_is_picked_as_the_full_weighing_picks_it(seed: int) -> None:
    # One busy node (requests beyond its slots queue on its runner), sometimes a second one down or
    # draining, loads, first tokens and ends in random order: the shortcut and the full weighing pick
    # the same nodes and leave the same ledger, loads, sessions and rates behind.
    rng = random.Random(seed)
    costs = Costs(work_waits=rng.random() < 0.7)
    fast, full = ModelAware(costs), _Weighed(costs)
    parallel = rng.choice([1, 2, 4])
    models = MODELS[:3]
    loaded = [LoadedModel(m, size=SIZES[m]) for m in rng.sample(models, rng.randint(0, 2))]
    in_flight: dict[str, int] = {}
    started: list[str] = []
    now = 100.0
    for _ in range(300):
        now += rng.choice([0.001, 0.01, 0.5, 3.0])
        nodes = [
            NodeView(
                "n0",
                parallel=parallel,
                available=frozenset(MODELS),
                loaded=tuple(loaded),
                in_flight=sum(in_flight.values()),
                in_flight_by_model=dict(in_flight),
                model_sizes=SIZES,
            )
        ]
        if rng.random() < 0.3:
            nodes.append(NodeView("n1", up=False, available=frozenset(MODELS), model_sizes=SIZES))
        if rng.random() < 0.6 or not started:
            model = rng.choice(models)
            req = RouteRequest(
                model,
                est_tokens=rng.randint(10, 2000),
                est_prompt_tokens=rng.randint(1, 500),
                affinity=rng.choice([None, None, "s1"]),
                prefer=rng.choice([None, None, "n0", "n1"]),
                max_wait_s=rng.choice([None, None, None, 5.0]),
            )
            picked = fast.pick(nodes, req, now)
            assert picked == full.pick(nodes, req, now)
            if not isinstance(picked, NoRoute):
                in_flight[model] = in_flight.get(model, 0) + 1
                started.append(model)
                if picked.cold and all(m.model != model for m in loaded):
                    loaded.append(LoadedModel(model, size=SIZES[model]))
        else:
            model = started.pop(rng.randrange(len(started)))
            timed, service_s = rng.random() < 0.5, rng.random()
            if rng.random() < 0.8:  # else it failed: the gateway's count drops, the ledger is not told
                for router in (fast, full):
                    router.first_token("n0", model, "", now, timed=timed)
                    router.finished("n0", model, service_s, now + 0.01)
            in_flight[model] -= 1
        assert _state(fast) == _state(full)
