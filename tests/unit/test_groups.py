"""Node groups: selector matching, and routing that never leaves a model's or a key's group."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from corral.config import ConfigError, load_settings
from corral.domain.fleet import NodeView, NoRoute, NoRouteReason, Pick, RouteRequest
from corral.domain.groups import format_selector, matches, parse_selector
from corral.domain.routing import make_strategy

KEYS = ["team", "pool", "zone"]
VALUES = ["a", "b", "c"]
STRATEGIES = ["round-robin", "least-connections", "priority", "power-of-two", "model-aware"]

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
selectors = st.one_of(st.none(), labels)


@given(labels)
def test_no_selector_and_the_empty_selector_match_every_node(node: dict[str, str]) -> None:
    assert matches(node, None) and matches(node, {})


@given(labels, labels)
def test_a_selector_matches_exactly_the_nodes_carrying_all_its_labels(
    node: dict[str, str], sel: dict[str, str]
) -> None:
    assert matches(node, sel) == (sel.items() <= node.items())


@given(labels, labels, st.sampled_from(KEYS), st.sampled_from(VALUES))
def test_another_term_never_widens_a_group(node: dict[str, str], sel: dict[str, str], key: str, value: str) -> None:
    if key not in sel and matches(node, {**sel, key: value}):
        assert matches(node, sel)


@given(labels)
def test_a_selector_reads_back_from_its_text(sel: dict[str, str]) -> None:
    assert parse_selector(format_selector(sel)) == sel


@pytest.mark.parametrize("text", ["team", "node=x", "1x=y", "team=", "__x=y"])
def test_a_bad_selector_term_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(text)


nodes_in_groups = st.lists(
    st.builds(
        NodeView,
        name=st.sampled_from([f"n{i}" for i in range(6)]),
        up=st.booleans(),
        available=st.just(frozenset({"m:1b"})) | st.just(frozenset()),
        in_flight=st.integers(0, 2),
        labels=labels,
    ),
    max_size=6,
    unique_by=lambda n: n.name,
)


@given(nodes_in_groups, selectors, selectors, st.sampled_from(STRATEGIES))
def test_routing_never_leaves_the_model_or_key_group(
    nodes: list[NodeView], model_sel: dict[str, str] | None, key_sel: dict[str, str] | None, name: str
) -> None:
    req = RouteRequest("m:1b", nodes=model_sel, key_nodes=key_sel)
    decision = make_strategy(name, random.Random(0)).pick(nodes, req, 0.0)
    in_group = [n for n in nodes if n.serves("m:1b") and matches(n.labels, model_sel) and matches(n.labels, key_sel)]
    if isinstance(decision, Pick):
        assert decision.node in {n.name for n in in_group}
        return
    assert isinstance(decision, NoRoute)
    assert not any(n.eligible for n in in_group)
    if any(n.serves("m:1b") for n in nodes) and not in_group:
        assert decision.reason in (NoRouteReason.OUTSIDE_MODEL_GROUP, NoRouteReason.OUTSIDE_KEY_GROUP)


def test_a_key_group_without_the_model_says_so_even_when_another_group_has_it_loaded() -> None:
    nodes = [NodeView("search-1", available=frozenset({"m:1b"}), labels={"team": "search"})]
    req = RouteRequest("m:1b", key_nodes={"team": "ads"})
    for name in STRATEGIES:
        assert make_strategy(name).pick(nodes, req, 0.0) == NoRoute(NoRouteReason.OUTSIDE_KEY_GROUP)
    req = RouteRequest("m:1b", nodes={"pool": "embeddings"})
    assert make_strategy("model-aware").pick(nodes, req, 0.0) == NoRoute(NoRouteReason.OUTSIDE_MODEL_GROUP)


@pytest.mark.parametrize(
    ("models", "backend_labels", "key"),
    [
        ({}, {"node": "x"}, "backends[0].labels"),
        ({}, {"team": ""}, "backends[0].labels"),
        ({"m": {"nodes": {"bad key": "x"}}}, {}, "models.m.nodes"),
        ({"m": {"fallbacks": ["m"]}}, {}, "models.m.fallbacks"),
        ({"aliases": {"a": "b", "b": "c"}}, {}, "models.aliases"),
        ({"aliases": {"x": "m"}, "m": {"names": ["x"]}}, {}, "models.aliases"),
    ],
)
def test_bad_labels_selectors_and_catalogs_are_refused_naming_the_key(
    tmp_path: Path, models: dict[str, object], backend_labels: dict[str, str], key: str
) -> None:
    path = tmp_path / "c.yaml"
    doc = {"backends": [{"name": "n", "url": "http://127.0.0.1:1", "labels": backend_labels}], "models": models}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert key in [k for k, _ in err.value.problems], err.value.problems


def test_labels_selectors_and_names_reach_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    doc = {
        "backends": [{"name": "n", "url": "http://127.0.0.1:1", "labels": {"pool": "embeddings"}}],
        "models": {"nomic-embed-text": {"nodes": {"pool": "embeddings"}, "names": ["nomic-ai/nomic-embed-text-v1.5"]}},
    }
    path.write_text(yaml.safe_dump(doc))
    settings = load_settings(path)
    assert settings.backends[0].labels == {"pool": "embeddings"}
    assert settings.models.catalog().resolve("nomic-ai/nomic-embed-text-v1.5:latest") == "nomic-embed-text:latest"
