"""Keep-warm (corral.domain.keep_warm), as properties over random fleets: it refreshes only idle runners
near their expiry on nodes with free room and no load waiting, always with a finite keep_alive."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView
from corral.domain.keep_alive import FOREVER, json_keep_alive, keep_alive_ns
from corral.domain.keep_warm import SAFETY_S, KeepWarm, KeepWarmParams, has_room, load_pending

MODELS = ("a", "b", "c", "d", "e")
GB = 2**30
NOW = 1_700_000_000.0


@st.composite
def fleets(draw: st.DrawFn) -> list[NodeView]:
    nodes = []
    for i in range(draw(st.integers(1, 5))):
        loaded = draw(st.lists(st.sampled_from(MODELS), unique=True, max_size=4))
        busy = {m: draw(st.integers(0, 2)) for m in draw(st.lists(st.sampled_from(MODELS), unique=True))}
        nodes.append(
            NodeView(
                name=f"n{i}",
                up=draw(st.booleans()) or i == 0,
                draining=draw(st.booleans()) and i > 0,
                parallel=2,
                max_loaded=draw(st.integers(1, 4)),
                vram_bytes=draw(st.sampled_from((None, 8 * GB, 24 * GB))),
                available=frozenset(MODELS),
                model_sizes={m: draw(st.integers(1, 6)) * GB for m in MODELS},
                loaded=tuple(
                    LoadedModel(
                        m,
                        options_key=draw(st.sampled_from(("", "", "num_ctx=8192"))),
                        size=draw(st.integers(1, 8)) * GB,
                        expires_at=NOW + draw(st.sampled_from((-1.0, 0.0, 2.0, 30.0, 59.0, 200.0, 1e9))),
                    )
                    for m in loaded
                ),
                in_flight=sum(busy.values()),
                in_flight_by_model=busy,
            )
        )
    return nodes


@settings(max_examples=400, deadline=None)
@given(fleets())
def test_refreshes_only_idle_runners_near_expiry_where_no_one_wants_the_room(nodes: list[NodeView]) -> None:
    rule = KeepWarm()
    by_name = {n.name: n for n in nodes}
    for action in rule.decide(nodes, NOW):
        node = by_name[action.node]
        runner = next(m for m in node.loaded if m.model == action.model)
        assert action.kind == "refresh"
        assert node.eligible
        # Never while memory is wanted there: a load pending on the node, or no free room.
        assert not load_pending(node)
        assert has_room(node) and len(node.loaded) < node.max_loaded
        assert node.in_flight_by_model.get(action.model, 0) == 0  # idle
        assert runner.options_key == ""  # an empty generate would reload one with other options
        assert SAFETY_S < runner.expires_at - NOW <= rule.p.margin_s  # pinned (far off) or racing: never
        # Finite: a refreshed runner still sorts among Ollama's victims as an untouched one does.
        ns = keep_alive_ns(json_keep_alive(action.keep_alive))
        assert ns is not None and 0 < ns < FOREVER


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_a_pending_load_on_a_node_stops_every_refresh_there(nodes: list[NodeView]) -> None:
    node = nodes[0]
    missing = next((m for m in MODELS if m not in {r.model for r in node.loaded}), None)
    if missing is None:
        return
    node.in_flight_by_model = {**node.in_flight_by_model, missing: 1}
    assert load_pending(node)
    assert all(a.node != node.name for a in KeepWarm().decide(nodes, NOW))


def idle_node(loaded: tuple[LoadedModel, ...], max_loaded: int = 3, vram_gb: int | None = None) -> NodeView:
    return NodeView(
        name="n",
        max_loaded=max_loaded,
        vram_bytes=None if vram_gb is None else vram_gb * GB,
        available=frozenset(MODELS),
        model_sizes={m: 2 * GB for m in MODELS},
        loaded=loaded,
    )


def test_a_runner_is_refreshed_once_per_keep_alive_then_again_when_due() -> None:
    node = idle_node((LoadedModel("a", expires_at=NOW + 50),))
    rule = KeepWarm(KeepWarmParams(keep_alive="5m", keep_alive_s=300, margin_s=60))
    assert [(a.node, a.model, a.keep_alive) for a in rule.decide([node], NOW)] == [("n", "a", "5m")]
    # `/api/ps` still shows the old expiry until its next poll: no second refresh meanwhile.
    assert rule.decide([node], NOW + 1) == []
    node.loaded = (LoadedModel("a", expires_at=NOW + 300),)
    assert rule.decide([node], NOW + 200) == []
    assert len(rule.decide([node], NOW + 250)) == 1  # due again


def test_a_full_node_lets_its_runners_expire() -> None:
    runners = tuple(LoadedModel(m, expires_at=NOW + 30) for m in ("a", "b", "c"))
    assert KeepWarm().decide([idle_node(runners, max_loaded=3)], NOW) == []
    # Full by memory: 22 of 24 GB used, no room for another 2 GB model (plus 30%) in 80% of the rest.
    big = (LoadedModel("a", size=22 * GB, expires_at=NOW + 30),)
    assert KeepWarm().decide([idle_node(big, vram_gb=24)], NOW) == []
    small = (LoadedModel("a", size=4 * GB, expires_at=NOW + 30),)
    assert len(KeepWarm().decide([idle_node(small, vram_gb=24)], NOW)) == 1
