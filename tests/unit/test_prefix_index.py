"""The prefix index (bounded, LRU) and how model-aware follows it: to the node that served the prefix
while it is not later than the best by more than the prompt evaluation a cache hit saves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.model_aware import ModelAware
from corral.domain.prefix_index import MAX_SLACK_S, WAIT_SHARE, PrefixIndex, slack_s


@given(st.integers(1, 50), st.lists(st.tuples(st.integers(0, 200), st.sampled_from("abc")), max_size=300))
def test_the_index_never_grows_past_its_size_and_keeps_the_latest(size: int, writes: list[tuple[int, str]]) -> None:
    index = PrefixIndex(size)
    for h, node in writes:
        index.record(h, node)
        assert len(index) <= size
    latest: dict[int, str] = {}
    for h, node in writes:
        latest.pop(h, None)
        latest[h] = node
    kept = list(latest.items())[-size:]
    for h, node in kept:
        found = index.find([h], [1])
        assert found is not None and found.node == node


def test_a_lookup_keeps_an_entry_alive_least_recently_used_goes_first() -> None:
    index = PrefixIndex(2)
    index.record(1, "a")
    index.record(2, "b")
    assert index.find([1], [0]) is not None  # 1 is used again: 2 is now the oldest
    index.record(3, "c")
    assert index.find([2], [0]) is None
    assert index.find([1], [0]) is not None and index.find([3], [0]) is not None


def test_the_longest_known_prefix_wins() -> None:
    index = PrefixIndex(10)
    index.record(1, "a")  # the system prompt, last served on a
    index.record(3, "b")  # this conversation's last turn, on b
    found = index.find([1, 2, 3, 4], [100, 200, 300, 400])
    assert found is not None and (found.node, found.cached_tokens) == ("b", 300)
    assert index.find([5, 6], [1, 2]) is None


def test_the_slack_is_the_prompt_evaluation_saved_within_a_cap() -> None:
    assert slack_s(4000, 2000.0) == 2.0 * WAIT_SHARE  # 2 s of evaluation saved
    assert slack_s(10**9, 2000.0) == MAX_SLACK_S
    assert slack_s(100, 0.0) == 0.0


def node(name: str, busy: int, parallel: int = 2, loaded: bool = True) -> NodeView:
    return NodeView(
        name,
        available=frozenset({"m"}),
        model_sizes={"m": 4 * 10**9},
        parallel=parallel,
        loaded=(LoadedModel("m", size=5 * 10**9),) if loaded else (),
        in_flight=busy,
        in_flight_by_model={"m": busy} if busy else {},
    )


def test_model_aware_goes_to_the_preferred_node_while_it_has_a_free_slot() -> None:
    nodes = [node("a", 0), node("b", 1), node("c", 0)]
    strategy = ModelAware()
    for t in range(6):  # without the preference the idle nodes take turns; with it, always b
        assert strategy.pick(nodes, RouteRequest("m", prefer="b", prefer_slack_s=0.5), float(t)) == Pick("b")


def test_it_waits_for_the_preferred_node_only_while_the_wait_is_worth_the_saving() -> None:
    strategy = ModelAware()
    strategy.finished("b", "m", 2.0, 0.0)  # a request holds a slot about 2 s
    # Every slot taken: the next request waits about 1 s on a, 2 s on b.
    nodes = [node("a", 2), node("b", 3)]
    assert strategy.pick(nodes, RouteRequest("m", prefer="b", prefer_slack_s=3.0), 1.0) == Pick("b")
    assert strategy.pick(nodes, RouteRequest("m", prefer="b", prefer_slack_s=0.2), 1.0) == Pick("a")
    # A free slot elsewhere is never given up for a queue on the preferred node.
    nodes = [node("a", 0), node("b", 2)]
    assert strategy.pick(nodes, RouteRequest("m", prefer="b", prefer_slack_s=3.0), 1.0) == Pick("a")
    # A free slot on b with more in flight than on a: within the slack, b; beyond it, a.
    nodes = [node("a", 0, parallel=8), node("b", 5, parallel=8)]
    assert strategy.pick(nodes, RouteRequest("m", prefer="b", prefer_slack_s=slack_s(40_000, 2000)), 2.0) == Pick("b")
    assert strategy.pick(nodes, RouteRequest("m", prefer="b", prefer_slack_s=slack_s(1_000, 2000)), 2.0) == Pick("a")


def test_in_a_big_fleet_the_preferred_node_is_weighed_wherever_it_is() -> None:
    nodes = [node(f"n{i:02}", 0) for i in range(40)]
    strategy = ModelAware()
    for t in range(10):
        assert strategy.pick(nodes, RouteRequest("m", prefer="n37", prefer_slack_s=0.5), float(t)) == Pick("n37")


def test_a_node_that_no_longer_holds_the_model_has_lost_the_cache() -> None:
    nodes = [node("a", 0), node("b", 0, loaded=False)]
    pick = ModelAware().pick(nodes, RouteRequest("m", prefer="b", prefer_slack_s=30.0), 0.0)
    assert pick == Pick("a")


def test_an_explicit_session_wins_over_the_preference() -> None:
    nodes = [node("a", 0), node("b", 0)]
    strategy = ModelAware()
    first = strategy.pick(nodes, RouteRequest("m", affinity="s"), 0.0)
    assert isinstance(first, Pick)
    other = "a" if first.node == "b" else "b"
    for t in range(1, 4):
        got = strategy.pick(nodes, RouteRequest("m", affinity="s", prefer=other, prefer_slack_s=5.0), float(t))
        assert got == first
