"""What fits where (corral/domain/fit.py) and how candidates apply it."""

from __future__ import annotations

from corral.domain.candidates import candidates
from corral.domain.fit import fits, is_fit_refusal
from corral.domain.fleet import NodeView, NoRoute, NoRouteReason, RouteRequest

GB = 2**30
MODEL = "llama3.1:70b"


def node(name: str, vram_gb: float | None = None, unfit: frozenset[str] = frozenset(), **kw: object) -> NodeView:
    return NodeView(
        name=name,
        vram_bytes=None if vram_gb is None else int(vram_gb * GB),
        available=frozenset({MODEL, "small:1b"}),
        model_sizes={MODEL: 40 * GB, "small:1b": 1 * GB},
        unfit=unfit,
        **kw,  # type: ignore[arg-type]
    )


def names(result: list[NodeView] | NoRoute) -> list[str]:
    assert not isinstance(result, NoRoute), result
    return [n.name for n in result]


def test_ollamas_memory_refusals_are_recognised_and_nothing_else() -> None:
    assert is_fit_refusal(500, b'{"error":"model requires more system memory (41.2 GiB) than is available (22.0 GiB)"}')
    assert is_fit_refusal(500, b'{"error":"llama runner process has terminated: cudaMalloc failed: out of memory"}')
    assert not is_fit_refusal(500, b'{"error":"simulated failure"}')
    assert not is_fit_refusal(400, b'{"error":"requires more system memory"}')


def test_a_model_bigger_than_a_nodes_memory_or_refused_there_does_not_fit() -> None:
    assert not fits(node("s", vram_gb=24), MODEL)
    assert fits(node("s", vram_gb=24), "small:1b")
    assert fits(node("b", vram_gb=80), MODEL)
    assert fits(node("u"), MODEL)  # memory unknown: nothing says it does not
    assert not fits(node("u", unfit=frozenset({MODEL})), MODEL)


def test_candidates_leave_out_nodes_a_model_does_not_fit() -> None:
    fleet = [node("small", vram_gb=24), node("refused", unfit=frozenset({MODEL})), node("big", vram_gb=80)]
    assert names(candidates(fleet, RouteRequest(MODEL))) == ["big"]
    assert names(candidates(fleet, RouteRequest("small:1b"))) == ["small", "refused", "big"]


def test_a_busy_fitting_node_is_waited_for_rather_than_a_small_one_sent_the_load() -> None:
    fleet = [node("small", vram_gb=24), node("big", vram_gb=80, max_concurrency=1, in_flight=1)]
    assert candidates(fleet, RouteRequest(MODEL)) == NoRoute(NoRouteReason.ALL_FULL)


def test_when_no_node_fits_every_node_stays_a_candidate() -> None:
    fleet = [node("a", vram_gb=24), node("b", unfit=frozenset({MODEL}))]
    assert names(candidates(fleet, RouteRequest(MODEL))) == ["a", "b"]


def test_a_refusal_keeps_the_model_off_nodes_with_no_more_memory_than_the_refusing_one() -> None:
    fleet = [
        node("refused", vram_gb=48, unfit=frozenset({MODEL})),
        node("same", vram_gb=48),
        node("smaller", vram_gb=45),
        node("bigger", vram_gb=80),
        node("unknown"),
    ]
    assert names(candidates(fleet, RouteRequest(MODEL))) == ["bigger", "unknown"]
