"""What a restore pulls: the backed-up inventory against the fleet's, as properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.restore_plan import plan_models

nodes = st.sampled_from(["a", "b", "c"])
models = st.sampled_from(["llama3.2:1b", "qwen2.5:7b", "gemma3:270m"])
digests = st.sampled_from(["d1", "d2", None])
inventories = st.dictionaries(nodes, st.dictionaries(models, digests, max_size=3), max_size=3)


Inv = dict[str, dict[str, str | None]]


@given(inventories, inventories)
def test_pulling_what_the_plan_says_leaves_nothing_to_pull(backup: Inv, current: Inv) -> None:
    plan = plan_models(backup, current)
    after = {node: dict(held) for node, held in current.items()}
    for node, model in plan.pulls:
        assert node in current and model not in current[node]  # only what a known node lacks
        after[node][model] = backup[node][model]
    again = plan_models(backup, after)
    assert again.done and again.unknown_nodes == plan.unknown_nodes
    # Nothing is dropped or changed: everything in the backup on a known node is present afterwards.
    for node in backup:
        if node in current:
            assert set(backup[node]) <= set(after[node])


def test_moved_tags_are_reported_not_pulled() -> None:
    plan = plan_models({"a": {"m": "d1", "n": "d1"}, "gone": {"m": "d1"}}, {"a": {"m": "d2", "x": "d9"}})
    assert plan.pulls == (("a", "n"),)
    assert [(d.node, d.model, d.backed_up, d.now) for d in plan.drift] == [("a", "m", "d1", "d2")]
    assert plan.unknown_nodes == ("gone",) and plan.extra == (("a", "x"),)
