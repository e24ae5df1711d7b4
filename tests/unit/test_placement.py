"""The placement file (corral.domain.placement): which nodes should hold a model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.domain.placement import PlacementError, parse_placement

FLEET = {"a": {"gpu": "a100", "zone": "x"}, "b": {"gpu": "l4"}, "c": {"gpu": "a100"}}


def test_nodes_by_name_and_by_labels_any_spelling_of_the_model() -> None:
    placement = parse_placement(
        {"models": {"llama3.2": {"nodes": ["b", "zz"]}, "qwen2.5:7b": {"labels": {"gpu": "a100"}, "keep_alive": "24h"}}}
    )
    assert placement.nodes_for("llama3.2:latest", FLEET) == ["b"]
    assert placement.nodes_for("registry.ollama.ai/library/qwen2.5:7b", FLEET) == ["a", "c"]
    assert placement.nodes_for("other", FLEET) == []
    entry = placement.get("qwen2.5:7b")
    assert entry is not None and entry.keep_alive == "24h"
    assert parse_placement(None).models == {}


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"model": {}}, "model: unknown key"),
        ({"models": {"m": {"nodes": ["a"], "labels": {"g": "x"}}}}, "models.m: give exactly one"),
        ({"models": {"m": {}}}, "models.m: give exactly one"),
        ({"models": {"m": {"nodes": "a"}}}, "models.m.nodes"),
        ({"models": {"m": {"nodes": ["a"], "keepalive": "1h"}}}, "models.m.keepalive: unknown key"),
        ({"models": {"m": {"labels": {"g": {"x": 1}}}}}, "models.m.labels.g"),
        ({"models": {"m": {"nodes": ["a"]}, "m:latest": {"nodes": ["b"]}}}, "the same model as models.m"),
        ({"models": {"m": {"nodes": ["a"], "keep_alive": True}}}, "models.m.keep_alive"),
        ([1], "must be a mapping"),
    ],
)
def test_a_wrong_file_names_the_key(doc: object, names: str) -> None:
    with pytest.raises(PlacementError, match=names.replace(".", r"\.").replace("(", r"\(")):
        parse_placement(doc)


@given(st.dictionaries(st.sampled_from(["gpu", "zone"]), st.sampled_from(["a100", "l4", "x"]), min_size=1))
def test_label_placement_picks_exactly_the_matching_nodes(labels: dict[str, str]) -> None:
    placement = parse_placement({"models": {"m": {"labels": labels}}})
    chosen = placement.nodes_for("m", FLEET)
    assert chosen == [n for n, have in FLEET.items() if all(have.get(k) == v for k, v in labels.items())]
