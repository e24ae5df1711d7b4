"""The shortcuts a routing decision takes on a small fleet give the answers of the full computation:
the one-pass filter is `candidates` (same nodes, same order, same refusals), and the ledger's free-slot
wait is its full estimate's."""

from __future__ import annotations

import random

import pytest

from corral.domain.candidates import candidates, candidates_holding, is_loaded
from corral.domain.fleet import LoadedModel, NodeView, RouteRequest
from corral.domain.ledger import Ledger

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
