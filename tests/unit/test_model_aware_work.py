"""Model-aware routing weighs the work queued on each copy (tokens, not requests): a short queue of long
answers is a long wait, and a free slot behind long prompts is not free."""

from __future__ import annotations

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.model_aware import Costs, ModelAware

GB = 1_000_000_000
MODELS = frozenset({"a:7b", "b:7b"})
SIZES = dict.fromkeys(MODELS, 4 * GB)


def node(name: str, loaded: dict[str, int], parallel: int = 1) -> NodeView:
    """A node holding `loaded` (model -> requests in flight for it)."""
    return NodeView(
        name,
        available=MODELS,
        model_sizes=SIZES,
        parallel=parallel,
        max_loaded=1,
        loaded=tuple(LoadedModel(m, size=5 * GB) for m in loaded),
        in_flight=sum(loaded.values()),
        in_flight_by_model={m: k for m, k in loaded.items() if k},
    )


def ask(prompt: int = 50, output: int = 100) -> RouteRequest:
    return RouteRequest("a:7b", est_tokens=prompt + output, est_prompt_tokens=prompt)


def test_the_queue_behind_a_short_answer_is_shorter_than_behind_a_long_one() -> None:
    strategy = ModelAware()
    idle = [node("x", {"a:7b": 0}), node("y", {"a:7b": 0})]
    first = strategy.pick(idle, ask(output=2000), 0.0)  # a long answer
    assert isinstance(first, Pick)
    long, short = first.node, ("y" if first.node == "x" else "x")
    half = [node(long, {"a:7b": 1}), node(short, {"a:7b": 0})]
    assert strategy.pick(half, ask(output=20), 0.1) == Pick(short)  # the free slot, a short answer
    for name in (long, short):
        strategy.first_token(name, "a:7b", "", 0.2)
    # One slot each, busy on both; one of them is nearly done. Short answers queue there, even once
    # more requests wait there than on the other (counting requests would send them to the long one).
    for t, there in ((0.3, 1), (0.4, 2), (0.5, 3)):
        busy = [node(short, {"a:7b": there}), node(long, {"a:7b": 1})]
        assert strategy.pick(busy, ask(output=20), t) == Pick(short)


def test_a_free_slot_behind_long_prompts_is_weighed_as_the_queue_it_is() -> None:
    for prompt, expected in ((200, Pick("warm")), (60_000, Pick("empty", cold=True))):
        strategy = ModelAware()
        warm = node("warm", {"a:7b": 0}, parallel=4)
        empty = node("empty", {}, parallel=4)
        assert strategy.pick([warm, empty], ask(prompt=prompt), 0.0) == Pick("warm")
        # Three of its four slots are free, but the prompt ahead must be prefilled before any new one.
        warm = node("warm", {"a:7b": 1}, parallel=4)
        assert strategy.pick([warm, empty], ask(), 0.1) == expected


def test_what_a_copy_has_done_is_learnt_and_leaves_the_queue() -> None:
    strategy = ModelAware()
    nodes = [node("x", {"a:7b": 0})]
    strategy.pick(nodes, ask(prompt=1000, output=500), 0.0)
    assert strategy.ledger.ahead("x", "a:7b") == 1
    strategy.first_token("x", "a:7b", "", 0.25)
    strategy.finished("x", "a:7b", 5.0, 5.25)
    assert strategy.ledger.ahead("x", "a:7b") == 0
    assert strategy.ledger.tpot("a:7b", 1.0) == 0.01  # 500 tokens in 5 s, alone on the GPU
    assert strategy.ledger.prefill("a:7b", 1.0) == 0.25 / 1000


def test_when_every_node_is_saturated_requests_queue_where_the_model_is_resident() -> None:
    idle = NodeView(
        "idle",
        available=MODELS | {"c:7b"},
        model_sizes={**SIZES, "c:7b": 4 * GB},
        parallel=4,
        max_loaded=2,
        loaded=(LoadedModel("b:7b", size=5 * GB), LoadedModel("c:7b", size=5 * GB)),
    )
    warm = node("warm", {"a:7b": 12}, parallel=4)  # as many requests in flight as the fleet has slots
    picks = {}
    for saturation in (1.0, float("inf")):
        strategy = ModelAware(Costs(saturation=saturation))
        for t in range(60):  # a:7b arrives faster than its one copy serves
            strategy.pick([warm], ask(), t / 10)
        picks[saturation] = strategy.pick([warm, idle], ask(), 6.0)
    # Evicting an idle model would start this request sooner, and only move the queue: it stays.
    assert picks[1.0] == Pick("warm")
    assert picks[float("inf")] == Pick("idle", cold=True)
