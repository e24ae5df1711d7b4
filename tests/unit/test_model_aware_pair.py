"""Model-aware routing: two models that cannot share a node, both in use, each on its own node (issue
17, node death). A load onto one of their nodes is planned with Ollama's victims (`server/sched.go`,
findRunnerToUnload: idle runners first, and only until the new model fits in the memory that comes
back), so the big model in use stays where it is and keeps its traffic, and the two do not swap."""

from __future__ import annotations

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.model_aware import ModelAware

GIB = 1024**3
DISK = {"phi4:14b": 9.1, "gemma2:9b": 5.5, "llama3.1:8b": 4.9, "qwen2.5:7b": 4.7, "llama3.2:3b": 2.0}
# Resident sizes with 4 slots of 4096 tokens, as /api/ps reports them (bench/policy_sim/fleet.py's catalogue).
RESIDENT = {"phi4:14b": 12.7, "gemma2:9b": 11.3, "llama3.1:8b": 7.4, "qwen2.5:7b": 6.1, "llama3.2:3b": 4.3}


def node(name: str, busy: dict[str, int], idle: tuple[str, ...] = ()) -> NodeView:
    """A 22 GB node (three runners at most, four slots each) holding the `busy` models, with that many
    requests in flight each, and the `idle` ones."""
    return NodeView(
        name,
        parallel=4,
        max_loaded=3,
        vram_bytes=22 * GIB,
        available=frozenset(DISK),
        model_sizes={m: int(gb * GIB) for m, gb in DISK.items()},
        loaded=tuple(LoadedModel(m, size=int(RESIDENT[m] * GIB), digest=m) for m in (*busy, *idle)),
        in_flight=sum(busy.values()),
        in_flight_by_model=busy,
    )


def test_a_load_beside_a_big_model_in_use_evicts_only_what_it_needs_and_the_pair_stays_put() -> None:
    # phi4 (12.7 GB) and gemma2 (11.3 GB) cannot share a 22 GB node. Each is in use on its own node; a
    # request for qwen2.5 7B, resident nowhere, must load somewhere. On node b, unloading the idle 8B
    # frees enough (6.1 GB fits in 80% of the 9.3 GB left beside phi4); node c is full of busy runners.
    strategy = ModelAware()
    b = node("b", {"phi4:14b": 2}, idle=("llama3.1:8b",))
    c = node("c", {"gemma2:9b": 3, "llama3.2:3b": 1})
    t = 0.0
    for model, at in (("phi4:14b", b), ("gemma2:9b", c)):  # both in use: routed to within the last minute
        assert strategy.pick([b, c], RouteRequest(model), t) == Pick(at.name)
        t += 1.0
    assert strategy.pick([b, c], RouteRequest("qwen2.5:7b"), t) == Pick("b", cold=True)
    # The router expects the 8B gone from b and phi4 still there: phi4's next request joins its copy
    # on b (no load anywhere), gemma2's stays on c, and only the 8B, evicted, needs a load.
    assert strategy.pick([b, c], RouteRequest("phi4:14b"), t + 0.5) == Pick("b")
    assert strategy.pick([b, c], RouteRequest("gemma2:9b"), t + 0.5) == Pick("c")
    eighth = strategy.pick([b, c], RouteRequest("llama3.1:8b"), t + 0.5)
    assert isinstance(eighth, Pick) and eighth.cold
