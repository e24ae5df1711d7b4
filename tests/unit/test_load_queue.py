"""Each node's queue of pending loads (corral/domain/load_queue.py): a load sent to a node that is
already loading, or waiting for a victim to drain, starts after those; never sooner than its own load."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.fleet import NodeView, Pick, RouteRequest
from corral.domain.load_queue import LoadQueues
from corral.domain.model_aware import ModelAware

loads = st.lists(
    st.tuples(
        st.sampled_from(["n0", "n1"]),
        st.sampled_from(["a", "b", "c"]),
        st.floats(0, 30),  # seconds since the previous load was sent
        st.floats(0, 300),  # the victims' drain
        st.floats(0, 60),  # unload and load
    ),
    max_size=12,
)


@given(loads, st.floats(0, 100))
def test_a_load_is_never_expected_before_its_own_load_time_nor_before_the_loads_ahead(
    sent: list[tuple[str, str, float, float, float]], gap: float
) -> None:
    queues = LoadQueues()
    now = 0.0
    ready: dict[str, float] = {}
    for node, model, after, drain, tail in sent:
        now += after
        free = queues.free_at(node, now)
        at = queues.push(node, (model, ""), now, drain, tail)
        assert at >= now + tail  # never earlier than the load itself
        assert at >= now + drain + tail  # nor than its victims' drain, then the load
        assert at >= free + tail  # nor than the loads queued ahead of it, then its own
        assert at >= ready.get(node, 0.0)  # the node's loads come in the order they were sent
        ready[node] = at
    later = now + gap
    for node in ("n0", "n1"):
        assert queues.free_at(node, later) >= later  # the loader is never free in the past


def test_a_load_behind_a_swap_waits_for_the_victim_to_drain() -> None:
    queues = LoadQueues()
    # A 70B load evicting a model with two minutes of requests left, then a small model's load there.
    queues.push("big", ("llama3.1:70b", ""), 0.0, drain_s=120.0, tail_s=20.0)
    assert queues.free_at("big", 1.0) == 140.0
    assert queues.push("big", ("llama3.2:1b", ""), 1.0, drain_s=0.0, tail_s=2.0) == 142.0
    assert queues.free_at("other", 1.0) == 1.0  # other nodes are not held


def test_a_load_past_its_estimate_holds_the_loader_until_its_first_token() -> None:
    queues = LoadQueues()
    queues.push("n", ("a", ""), 0.0, drain_s=0.0, tail_s=5.0)
    assert queues.free_at("n", 8.0) == 8.0  # overdue: still loading as far as the router knows
    assert queues.push("n", ("b", ""), 8.0, drain_s=0.0, tail_s=5.0) == 13.0
    assert queues.seen("n", ("a", ""))  # a's first token: a is done, b (sent after it) is not
    assert queues.free_at("n", 9.0) == 13.0
    assert not queues.seen("n", ("a", ""))
    assert queues.seen("n", ("b", ""))  # b's first token: the loader is free
    assert queues.free_at("n", 10.0) == 10.0


def test_a_first_token_frees_the_loads_sent_before_it_not_those_after() -> None:
    # Ollama loads first in, first out: a first token of the second load says the first is done too,
    # and says nothing of the third and fourth, which still take their time after it.
    queues = LoadQueues()
    for t, model in enumerate("abcd"):
        queues.push("n", (model, ""), float(t), drain_s=0.0, tail_s=10.0)
    assert queues.free_at("n", 4.0) == 40.0
    assert queues.seen("n", ("b", ""))
    assert len(queues) == 2
    assert queues.free_at("n", 11.0) == 22.0  # c, sent at 2, ready at 12; then d, 10 s after it
    assert queues.seen("n", ("d", ""))
    assert len(queues) == 0


@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=10), st.sampled_from("abcde"))
def test_a_first_token_never_frees_a_load_sent_after_the_one_it_answers(sent: list[str], answered: str) -> None:
    queues = LoadQueues()
    for t, model in enumerate(sent):
        queues.push("n", (model, ""), float(t), drain_s=0.0, tail_s=5.0)
    found = queues.seen("n", (answered, ""))
    assert found == (answered in sent)
    last = len(sent) - 1 - sent[::-1].index(answered) if found else -1  # its latest load: nothing after
    assert len(queues) == len(sent) - (last + 1)


def test_a_first_token_of_a_request_sent_before_a_reload_frees_nothing_queued_after_it() -> None:
    # a is loaded and answering; b is sent to evict it (its requests drain for 30 s), then a's reload
    # behind b. A first token from a's old runner, for a request sent before both, says nothing of them.
    queues = LoadQueues()
    queues.push("n", ("b", ""), 10.0, drain_s=30.0, tail_s=5.0)
    queues.push("n", ("a", ""), 11.0, drain_s=0.0, tail_s=5.0)
    assert not queues.seen("n", ("a", ""), sent_at=9.0)
    assert queues.free_at("n", 12.0) == 50.0
    assert queues.seen("n", ("a", ""), sent_at=11.0)  # the reload's own request: both are done
    assert queues.free_at("n", 46.0) == 46.0


def test_loads_that_never_answer_are_forgotten() -> None:
    queues = LoadQueues(forget_s=10.0, patience=3.0)
    queues.push("n", ("a", ""), 0.0, drain_s=0.0, tail_s=5.0)
    queues.prune(20.0)
    assert len(queues) == 1
    queues.prune(26.0)  # 3 x 5 s + 10 s
    assert len(queues) == 0


def test_the_router_keeps_a_load_pending_until_a_request_sent_after_it_answers() -> None:
    # The router starts a load of m on n; a first token of m from n for a request sent before that
    # (the runner the load replaces) leaves the load pending; one sent with it ends it.
    view = NodeView("n", available=frozenset({"m:7b"}), model_sizes={"m:7b": 4_000_000_000})
    strategy = ModelAware()
    assert strategy.pick([view], RouteRequest("m:7b"), 10.0) == Pick("n", cold=True)
    strategy.first_token("n", "m:7b", "", 10.5, sent_at=9.0)
    assert strategy.wait_s(view, "m:7b", 10.5) > 0
    strategy.first_token("n", "m:7b", "", 11.0, sent_at=10.0)
    assert strategy.wait_s(view, "m:7b", 11.0) == 0
