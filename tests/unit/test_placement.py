"""Placement as code: the file's parser and plan(desired, actual), whose result applied once leaves
nothing to do."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.placement import (
    ActionKind,
    NodeInventory,
    PlacementError,
    applied,
    drift,
    parse_placement,
    plan,
)

NODES = ["a", "b", "c"]
MODELS = ["llama3.2:1b", "qwen2.5:0.5b", "gemma3:1b", "phi4:14b"]


def test_parse_and_plan_names_the_exact_changes() -> None:
    placement = parse_placement(
        {
            "models": {
                "llama3.2:1b": {"nodes": ["a", "b"], "keep_alive": "24h"},
                "qwen2.5:0.5b": {"nodes": ["a"]},
                "embed": {"labels": {"role": "embed"}},
            }
        }
    )
    nodes = [
        NodeInventory("a", models={"llama3.2:1b": "d1"}, loaded=frozenset({"llama3.2:1b"})),
        NodeInventory("b", models={"qwen2.5:0.5b": "d2"}),
        NodeInventory("c", labels={"role": "embed"}),
    ]
    result = plan(placement, nodes)
    assert [a.describe() for a in result.actions] == [
        "pull qwen2.5:0.5b on a",
        "pull llama3.2:1b on b",
        "warm llama3.2:1b on b with keep_alive 24h",
        "delete qwen2.5:0.5b on b",
        "pull embed:latest on c",
    ]
    assert plan(placement, applied(nodes, result.actions)).in_sync


def test_models_the_file_does_not_name_are_left_alone_and_down_nodes_skipped() -> None:
    placement = parse_placement({"models": {"a-model": {"nodes": ["a"]}}})
    nodes = [NodeInventory("a", models={"other:1b": "x"}), NodeInventory("b", up=False, models={"a-model:latest": "y"})]
    result = plan(placement, nodes)
    assert [a.describe() for a in result.actions] == ["pull a-model:latest on a"]
    assert result.skipped == ("b",)


def test_unknown_nodes_are_reported() -> None:
    result = plan(parse_placement({"models": {"m": {"nodes": ["ghost"]}}}), [NodeInventory("a")])
    assert result.unknown_nodes == ("ghost",)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "(file)"),
        ({"models": {"m": {"nodes": "a"}}}, "models.m.nodes"),
        ({"models": {"m": {}}}, "models.m"),
        ({"models": {"m": {"nodes": ["a"], "keep_alive": "forever"}}}, "models.m.keep_alive"),
        ({"models": {"m": {"nodes": ["a"], "keepalive": "1h"}}}, "models.m.keepalive"),
        ({"models": {"m": {"nodes": ["a"], "keep_alive": "0s"}}}, "models.m.keep_alive"),
        ({"models": {"m": {"nodes": ["a"], "keep_alive": 0}}}, "models.m.keep_alive"),
        ({"models": {"m": {"labels": {"gpu": 1}}}}, "models.m.labels"),
        ({"models": {}, "extra": 1}, "extra"),
        ({"models": {"m": {"nodes": ["a"]}, "m:latest": {"nodes": ["b"]}}}, "models.m:latest"),
    ],
)
def test_errors_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(PlacementError) as err:
        parse_placement(doc)
    assert str(err.value).startswith(field), err.value


def test_keep_alive_forms_ollama_accepts() -> None:
    for value in ("24h", "-1", "1h30m", "300", "10s", -1, 3600):
        doc = {"models": {"m": {"nodes": ["a"], "keep_alive": value}}}
        assert parse_placement(doc).models[0].keep_alive == str(value)


def test_drift_flags_one_name_with_different_digests() -> None:
    nodes = [
        NodeInventory("a", models={"m:1b": "d1", "n:1b": "z"}),
        NodeInventory("b", models={"m:1b": "d2", "n:1b": "z"}),
    ]
    assert drift(nodes) == {"m:1b": {"a": "d1", "b": "d2"}}


inventories = st.lists(
    st.builds(
        NodeInventory,
        name=st.sampled_from(NODES),
        up=st.booleans(),
        labels=st.dictionaries(st.sampled_from(["gpu", "role"]), st.sampled_from(["x", "y"]), max_size=2),
        models=st.dictionaries(st.sampled_from(MODELS), st.sampled_from(["d1", "d2"]), max_size=4),
        loaded=st.frozensets(st.sampled_from(MODELS), max_size=3),
    ),
    max_size=3,
    unique_by=lambda n: n.name,
)
placements = st.dictionaries(
    st.sampled_from(MODELS),
    st.one_of(
        st.fixed_dictionaries(
            {"nodes": st.lists(st.sampled_from(NODES), min_size=1, max_size=3)},
            optional={"keep_alive": st.sampled_from(["24h", "-1", "5m"])},
        ),
        st.fixed_dictionaries({"labels": st.dictionaries(st.just("gpu"), st.just("x"), min_size=1)}),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(inventories, placements)
def test_plan_applied_once_leaves_nothing_to_do(nodes: list[NodeInventory], doc: dict[str, object]) -> None:
    placement = parse_placement({"models": doc})
    first = plan(placement, nodes)
    assert plan(placement, applied(nodes, first.actions)).in_sync
    named = {m.model for m in placement.models}
    down = {n.name for n in nodes if not n.up}
    for action in first.actions:
        assert action.node not in down  # nothing is done to a node that is down
        assert action.model in named  # a model the file does not name is never touched
    for node, actions in first.by_node().items():
        kinds = [a.kind for a in actions]
        # pulls before warms before deletes on every node
        assert kinds == sorted(kinds, key=[ActionKind.PULL, ActionKind.WARM, ActionKind.DELETE].index), node


FLEET = {"a": {"gpu": "a100", "zone": "x"}, "b": {"gpu": "l4"}, "c": {"gpu": "a100"}}


def test_the_nodes_a_fleet_call_acts_on_any_spelling_of_the_model() -> None:
    placement = parse_placement(
        {"models": {"llama3.2": {"nodes": ["b", "zz"]}, "qwen2.5:7b": {"labels": {"gpu": "a100"}, "keep_alive": "24h"}}}
    )
    assert placement.nodes_for("llama3.2:latest", FLEET) == ["b"]
    assert placement.nodes_for("registry.ollama.ai/library/qwen2.5:7b", FLEET) == ["a", "c"]
    assert placement.nodes_for("other", FLEET) == []
    entry = placement.get("qwen2.5:7b")
    assert entry is not None and entry.keep_alive == "24h"
    assert parse_placement(None).models == ()


@given(st.dictionaries(st.sampled_from(["gpu", "zone"]), st.sampled_from(["a100", "l4", "x"]), min_size=1))
def test_label_placement_picks_exactly_the_matching_nodes(labels: dict[str, str]) -> None:
    placement = parse_placement({"models": {"m": {"labels": labels}}})
    chosen = placement.nodes_for("m", FLEET)
    assert chosen == [n for n, have in FLEET.items() if all(have.get(k) == v for k, v in labels.items())]
