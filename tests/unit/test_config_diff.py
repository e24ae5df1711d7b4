"""What a reload changes (corral.domain.config_diff): nodes by name, changed keys, restart-only keys."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from corral.config import Settings, load_settings
from corral.domain.config_diff import changed_keys, diff_config, diff_nodes, needs_restart


def dump(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


def node(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "type": "ollama", "max_concurrency": None, **extra}


def test_nodes_are_added_removed_replaced_or_updated_by_name() -> None:
    old = {"a": node("http://a:1"), "b": node("http://b:1"), "c": node("http://c:1"), "d": node("http://d:1")}
    new = {
        "a": node("http://a:1"),  # unchanged
        "b": node("http://b:2"),  # new address: replaced
        "c": node("http://c:1", max_concurrency=4),  # a limit: in place
        "e": node("http://e:1"),
    }
    changes = diff_nodes(old, new)
    assert changes.added == ("e",)
    assert changes.removed == ("d",)
    assert changes.replaced == ("b",)
    assert changes.updated == ("c",)


def test_a_node_that_changes_api_is_replaced() -> None:
    changes = diff_nodes({"a": node("http://a:1")}, {"a": node("http://a:1", type="openai")})
    assert changes.replaced == ("a",) and not changes.updated


names = st.sampled_from(["a", "b", "c", "d", "e"])
fleets = st.dictionaries(
    names, st.builds(node, st.sampled_from(["http://x:1", "http://y:1"]), max_concurrency=st.none() | st.integers(1, 3))
)


@given(fleets, fleets)
def test_every_name_lands_in_exactly_one_place(old: dict[str, Any], new: dict[str, Any]) -> None:
    changes = diff_nodes(old, new)
    groups = [changes.added, changes.removed, changes.replaced, changes.updated]
    touched = [name for group in groups for name in group]
    assert len(touched) == len(set(touched))
    assert set(changes.added) == set(new) - set(old)
    assert set(changes.removed) == set(old) - set(new)
    unchanged = {n for n in set(old) & set(new) if old[n] == new[n]}
    assert set(touched) == (set(old) | set(new)) - unchanged
    assert diff_nodes(new, new).empty


def test_changed_keys_walk_sections_and_compare_lists_whole() -> None:
    old = {"routing": {"retries": 2, "strategy": "x"}, "validation": {"models": ["a"]}}
    new = {"routing": {"retries": 1, "strategy": "x"}, "validation": {"models": ["a", "b"]}, "extra": 1}
    assert changed_keys(old, new) == ["routing.retries", "validation.models", "extra"]
    assert changed_keys(old, old) == []


def test_restart_only_keys_are_picked_by_prefix() -> None:
    changed = ["server.port", "server.tls.cert_file", "server.max_body_bytes", "tracing.endpoint", "limits.global_rpm"]
    assert needs_restart(changed) == ("server.port", "server.tls.cert_file", "tracing.endpoint")


def test_a_settings_diff_separates_nodes_live_settings_and_restart_only_ones() -> None:
    old = load_settings(None, backends=[{"name": "a", "url": "http://127.0.0.1:1"}])
    new = load_settings(
        None,
        backends=[{"name": "b", "url": "http://127.0.0.1:2"}],
        server={"port": 9999},
        limits={"global_rpm": 10},
    )
    diff = diff_config(dump(old), dump(new))
    assert diff.nodes.added == ("b",) and diff.nodes.removed == ("a",)
    assert set(diff.changed) == {"server.port", "limits.global_rpm"}
    assert diff.restart_required == ("server.port",)
    assert diff_config(dump(old), dump(old)).empty
