"""One catalog of names: aliases, pooled node-side names, and the model echo in answers."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.domain.catalog import Catalog
from corral.domain.fleet import LoadedModel, NodeView, NoRoute, NoRouteReason, Pick, RouteRequest
from corral.domain.model_aware import ModelAware
from corral.protocol.echo import ModelEcho

CATALOG = Catalog.build(
    {"gpt-4o-mini": "llama-3b", "fast": "qwen2.5:7b"},
    {"llama-3b": ["llama3.2:3b", "meta-llama/Llama-3.2-3B-Instruct"]},
)


def test_aliases_and_every_pooled_name_resolve_to_the_one_catalog_key() -> None:
    for name in ("gpt-4o-mini:latest", "llama3.2:3b", "meta-llama/llama-3.2-3b-instruct:latest", "llama-3b:latest"):
        assert CATALOG.resolve(name) == "llama-3b:latest"
    assert CATALOG.resolve("fast:latest") == "qwen2.5:7b"
    assert CATALOG.resolve("other:1b") == "other:1b"  # not in the catalog: itself
    assert CATALOG.display("gpt-4o-mini:latest") == "gpt-4o-mini"
    assert sorted(CATALOG.aliases_of({"llama-3b:latest"})) == [("gpt-4o-mini:latest", "llama-3b:latest")]


@pytest.mark.parametrize(
    ("aliases", "names"),
    [
        ({"a": "b", "b": "c"}, {}),  # an alias of an alias
        ({"x": "m"}, {"m": ["x"]}),  # an alias that is also a pooled name
        ({}, {"m": ["x"], "n": ["x"]}),  # one name in two catalog entries
    ],
)
def test_an_ambiguous_catalog_is_refused(aliases: dict[str, str], names: dict[str, list[str]]) -> None:
    with pytest.raises(ValueError):
        Catalog.build(aliases, names)


def test_a_fallback_is_not_picked_when_the_wait_exceeds_its_limit_and_nothing_is_dispatched() -> None:
    cold = NodeView("n", available=frozenset({"big:70b"}), model_sizes={"big:70b": 40_000_000_000})
    strategy = ModelAware()
    refused = strategy.pick([cold], RouteRequest("big:70b", max_wait_s=2.0), 0.0)
    assert isinstance(refused, NoRoute) and refused.reason is NoRouteReason.TOO_SLOW
    # Nothing was recorded as loading: without the limit the same pick is a cold load, not a join.
    assert strategy.pick([cold], RouteRequest("big:70b"), 0.0) == Pick("n", cold=True)
    warm = NodeView("w", available=frozenset({"big:70b"}), loaded=(LoadedModel("big:70b"),))
    assert ModelAware().pick([warm], RouteRequest("big:70b", max_wait_s=0.01), 0.0) == Pick("w")


def _frames(client: str) -> list[bytes]:
    return [orjson.dumps({"model": client, "i": i, "done": i == 2}) + b"\n" for i in range(3)]


@given(st.lists(st.integers(1, 40), min_size=1, max_size=20))
def test_the_echo_renames_every_frame_however_the_bytes_are_cut(cuts: list[int]) -> None:
    node_bytes = b"".join(_frames("llama3.2:3b"))
    echo = ModelEcho("llama3.2:3b", "gpt-4o-mini")
    out, at = b"", 0
    for cut in cuts:
        out += echo.feed(node_bytes[at : at + cut])
        at += cut
    out += echo.feed(node_bytes[at:]) + echo.flush()
    assert out == b"".join(_frames("gpt-4o-mini"))


def test_the_echo_holds_back_nothing_when_frames_arrive_whole() -> None:
    echo = ModelEcho("meta-llama/Llama-3.2-3B-Instruct", "llama-3b")
    sse = b'data: {"id": "x", "model": "meta-llama/Llama-3.2-3B-Instruct", "choices": []}\n\n'
    assert echo.feed(sse) == sse.replace(b"meta-llama/Llama-3.2-3B-Instruct", b"llama-3b")
    assert echo.feed(b'{"model":"other","content":"\\"model\\":"}\n') == b'{"model":"other","content":"\\"model\\":"}\n'
    whole = b'{"model":"meta-llama/Llama-3.2-3B-Instruct","done":true}'
    assert echo.feed(whole) == b"" and echo.flush() == b'{"model":"llama-3b","done":true}'
