"""Model-aware routing: where it sends a request as a fleet operator would, and what it learns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.model_aware import Costs, ModelAware

GB = 1_000_000_000
MODELS = frozenset({"a:7b", "b:7b", "c:7b", "d:7b"})
SIZES = {m: 4 * GB for m in MODELS}


def node(name: str, loaded: dict[str, int] | None = None, parallel: int = 4, **kw: object) -> NodeView:
    """A node holding `loaded` (model -> requests in flight for it)."""
    loaded = loaded or {}
    return NodeView(
        name,
        available=MODELS,
        model_sizes=SIZES,
        parallel=parallel,
        loaded=tuple(LoadedModel(m, size=5 * GB) for m in loaded),
        in_flight=sum(loaded.values()),
        in_flight_by_model={m: k for m, k in loaded.items() if k},
        **kw,  # type: ignore[arg-type]
    )


def test_a_free_slot_where_the_model_is_loaded_wins_over_everything() -> None:
    strategy = ModelAware()
    nodes = [node("empty"), node("warm", {"a:7b": 3}), node("busy-warm", {"a:7b": 1, "b:7b": 2})]
    for t in range(5):
        assert strategy.pick(nodes, RouteRequest("a:7b"), float(t)) == Pick("warm")


def test_a_request_joins_a_load_in_progress_instead_of_evicting_a_model_in_use() -> None:
    strategy = ModelAware()
    full = node("full", {"b:7b": 1, "c:7b": 1, "d:7b": 1})
    empty = node("empty")
    # Everything is in use on `full`: the first request for a:7b loads it into free room.
    for t in range(3):
        strategy.pick([full], RouteRequest(m), float(t)) if (m := ["b:7b", "c:7b", "d:7b"][t]) else None
    assert strategy.pick([full, empty], RouteRequest("a:7b"), 3.0) == Pick("empty", cold=True)
    # /api/ps has not caught up, and the load is still going: the next one waits for it there.
    loading = node("empty", {"a:7b": 1})
    assert strategy.pick([full, loading], RouteRequest("a:7b"), 3.5) == Pick("empty")


def test_while_a_load_runs_more_requests_load_in_free_room_in_parallel() -> None:
    # A cold fleet: waiting for the first node's load is no better than loading a second copy
    # beside it, and the second copy serves later requests too.
    strategy = ModelAware()
    first = strategy.pick([node("a"), node("b")], RouteRequest("a:7b"), 0.0)
    assert isinstance(first, Pick) and first.cold
    other = "b" if first.node == "a" else "a"
    loading = node(first.node, {"a:7b": 1})
    assert strategy.pick([loading, node(other)], RouteRequest("a:7b"), 0.1) == Pick(other, cold=True)
    # Once their first tokens are out, the runners are ready and free slots come first again.
    strategy.first_token("a", "a:7b", "", 0.5)
    strategy.first_token("b", "a:7b", "", 0.5)
    both = [node("a", {"a:7b": 1}), node("b", {"a:7b": 2})]
    assert strategy.pick(both, RouteRequest("a:7b"), 0.6) == Pick("a")


def test_the_routers_own_load_outlives_a_stale_poll() -> None:
    strategy = ModelAware()
    full = node("full", {"b:7b": 1, "c:7b": 1, "d:7b": 1})
    for t, m in enumerate(["b:7b", "c:7b", "d:7b"]):
        strategy.pick([full], RouteRequest(m), float(t))
    assert strategy.pick([full, node("n")], RouteRequest("a:7b"), 3.0) == Pick("n", cold=True)
    # A poll before Ollama listed the runner shows nothing loaded on n: it is still coming.
    stale = NodeView("n", available=MODELS, model_sizes=SIZES, parallel=4, in_flight=1, in_flight_by_model={"a:7b": 1})
    assert strategy.pick([full, stale], RouteRequest("a:7b"), 4.0) == Pick("n")


def test_a_hot_model_is_replicated_into_free_room_once_its_slots_are_taken() -> None:
    strategy = ModelAware()
    saturated = node("warm", {"a:7b": 6})  # 4 slots busy, 2 queued
    assert strategy.pick([saturated, node("empty")], RouteRequest("a:7b"), 0.0) == Pick("empty", cold=True)


def test_a_passing_queue_does_not_evict_another_model_in_use() -> None:
    strategy = ModelAware()
    # a:7b traffic is light; its replica is momentarily full. The other node's models are in use.
    warm = node("warm", {"a:7b": 4})
    other = node("other", {"b:7b": 1, "c:7b": 1, "d:7b": 1})
    for t, m in enumerate(["b:7b", "c:7b", "d:7b"]):
        strategy.pick([other], RouteRequest(m), float(t))
    assert strategy.pick([warm, other], RouteRequest("a:7b"), 3.0) == Pick("warm")


def test_an_idle_model_is_evicted_rather_than_one_in_use() -> None:
    strategy = ModelAware()
    busy = node("busy", {"b:7b": 1, "c:7b": 1, "d:7b": 1})
    idle = node("idle", {"b:7b": 0, "c:7b": 0, "d:7b": 0})
    for t, m in enumerate(["b:7b", "c:7b", "d:7b"]):
        strategy.pick([busy], RouteRequest(m), float(t))
    assert strategy.pick([busy, idle], RouteRequest("a:7b"), 100.0) == Pick("idle", cold=True)


def test_a_model_used_a_moment_ago_is_not_evicted_when_a_long_idle_one_can_be() -> None:
    recent = node("recent", {"b:7b": 0, "c:7b": 0, "d:7b": 0})
    stale = node("stale", {"b:7b": 0, "c:7b": 0, "d:7b": 0})
    for order in ([recent, stale], [stale, recent]):
        strategy = ModelAware()
        for t, m in enumerate(["b:7b", "c:7b", "d:7b"]):
            strategy.pick([stale], RouteRequest(m), float(t))
        for t, m in enumerate(["b:7b", "c:7b", "d:7b"]):
            strategy.pick([recent], RouteRequest(m), 500.0 + t)
        # Both hold three idle models; evicting one just used on `recent` would bring it back soon.
        assert strategy.pick(order, RouteRequest("a:7b"), 510.0) == Pick("stale", cold=True)


def test_other_load_time_options_go_to_a_node_of_their_own() -> None:
    strategy = ModelAware()
    runner = NodeView(
        "ctx-8k",
        available=MODELS,
        model_sizes=SIZES,
        parallel=4,
        loaded=(LoadedModel("a:7b", options_key="num_ctx=8192"),),
        in_flight=1,
        in_flight_by_model={"a:7b": 1},
    )
    strategy.pick([runner], RouteRequest("a:7b", options_key="num_ctx=8192"), 0.0)
    # Sending the default-context request there would reload the runner under its user.
    assert strategy.pick([runner, node("empty")], RouteRequest("a:7b"), 1.0) == Pick("empty", cold=True)


def test_memory_decides_the_victims_when_the_node_size_is_known() -> None:
    strategy = ModelAware()
    # One model in use fills most of a 12 GB node: a second one cannot fit beside it.
    small = node("small", {"b:7b": 1}, vram_bytes=12 * GB)
    roomy = node("roomy", {"c:7b": 1}, vram_bytes=48 * GB)
    for t, m in enumerate(["b:7b", "c:7b"]):
        strategy.pick([small, roomy], RouteRequest(m), float(t))
    assert strategy.pick([small, roomy], RouteRequest("a:7b"), 2.0) == Pick("roomy", cold=True)


def test_load_times_are_learnt_from_the_first_token_after_a_load() -> None:
    strategy = ModelAware()
    empty = node("n")
    before = strategy.load_s(empty, "a:7b")
    assert strategy.pick([empty], RouteRequest("a:7b"), 10.0) == Pick("n", cold=True)
    strategy.first_token("n", "a:7b", "", 10.2, timed=True)  # a fast disk: 0.2 s instead of ~3 s
    assert strategy.load_s(empty, "a:7b") < before * 0.9
    # An untimed answer (not streamed: its first byte came at the end) teaches nothing.
    other = ModelAware()
    other.pick([empty], RouteRequest("a:7b"), 10.0)
    other.first_token("n", "a:7b", "", 30.0, timed=False)
    assert other.load_s(empty, "a:7b") == before


def test_service_times_are_learnt_per_model() -> None:
    strategy = ModelAware(Costs(learn_rate=0.5))
    n = node("n")
    prior = strategy.service_s(n, "a:7b")
    for _ in range(10):
        strategy.finished("n", "a:7b", 1.0, 0.0)
    assert abs(strategy.service_s(n, "a:7b") - 1.0) < 0.01
    assert strategy.service_s(n, "b:7b") == prior


def test_affinity_stays_while_the_model_is_loaded_there() -> None:
    nodes = [node(f"n{i}", {"a:7b": 0}) for i in range(3)]
    strategy = ModelAware()
    first = strategy.pick(nodes, RouteRequest("a:7b", affinity="session-1"), 0.0)
    assert isinstance(first, Pick)
    for t in range(5):
        assert strategy.pick(nodes, RouteRequest("a:7b", affinity="session-1"), float(t)) == first


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "loaded": st.dictionaries(st.sampled_from(sorted(MODELS)), st.integers(0, 6), max_size=3),
                "parallel": st.integers(1, 4),
                "vram": st.one_of(st.none(), st.integers(8, 48)),
            }
        ),
        min_size=1,
        max_size=5,
    ),
    st.lists(
        st.tuples(st.sampled_from(sorted(MODELS)), st.sampled_from(["", "num_ctx=8192"])), min_size=1, max_size=20
    ),
)
def test_a_warm_free_slot_is_always_taken_when_there_is_one(
    specs: list[dict[str, object]], requests: list[tuple[str, str]]
) -> None:
    strategy = ModelAware()
    nodes = [
        node(
            f"n{i}",
            spec["loaded"],
            parallel=spec["parallel"],
            vram_bytes=None if spec["vram"] is None else spec["vram"] * GB,
        )  # type: ignore[arg-type, operator]
        for i, spec in enumerate(specs)
    ]
    for t, (model, options) in enumerate(requests):
        req = RouteRequest(model, options_key=options)
        decision = strategy.pick(nodes, req, float(t))
        assert isinstance(decision, Pick)
        warm_free = [
            n.name
            for n in nodes
            if any(m.model == model and m.options_key == options for m in n.loaded)
            and n.in_flight_by_model.get(model, 0) < n.parallel
            and t == 0  # only before the router's own news can change what counts as loaded
        ]
        if warm_free:
            assert decision.node in warm_free
