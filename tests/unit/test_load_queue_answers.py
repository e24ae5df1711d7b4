"""Loads counted until they answer (corral/domain/load_queue.py, `Costs.queue_until_answered`): a
first token says that its own load is done, not that the loads sent before it are. A request for a
model still resident is answered on Ollama's fast path while the loads ahead of its own are pending."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.domain.fleet import LoadedModel, NodeView, Pick, RouteRequest
from corral.domain.load_queue import LoadQueues
from corral.domain.model_aware import ModelAware
from corral.domain.route_costs import Costs

SIZES = {"a:7b": 4_000_000_000, "b:7b": 4_000_000_000}


def test_an_answer_on_the_fast_path_leaves_the_loads_ahead_of_it_queued() -> None:
    # x is sent to evict m (m's requests drain for 30 s), then y; then a request for m, which the router
    # took for evicted and sent as a reload. m is still resident: Ollama answers it at once, and x and y
    # are still pending.
    queues = LoadQueues(until_answered=True)
    queues.push("n", ("x", ""), 0.0, drain_s=30.0, tail_s=5.0)
    queues.push("n", ("y", ""), 1.0, drain_s=0.0, tail_s=5.0)
    queues.push("n", ("m", ""), 2.0, drain_s=0.0, tail_s=5.0)
    assert queues.seen("n", ("m", ""), sent_at=2.0)
    assert queues.free_at("n", 3.0) == 40.0  # x after m's drain, then y
    assert queues.seen("n", ("x", ""), sent_at=0.0)
    assert queues.queued("n") == 1  # y is still to come
    assert queues.seen("n", ("y", ""), sent_at=1.0)
    assert len(queues) == 0


@given(
    st.lists(st.sampled_from("abcde"), min_size=1, max_size=10),
    st.sampled_from("abcde"),
    st.integers(0, 10),
)
def test_a_first_token_ends_only_its_own_models_loads_sent_no_later(sent: list[str], answered: str, at: int) -> None:
    queues = LoadQueues(until_answered=True)
    for t, model in enumerate(sent):
        queues.push("n", (model, ""), float(t), drain_s=0.0, tail_s=5.0)
    queues.seen("n", (answered, ""), sent_at=float(at))
    # Every other model's load stays; so do the answered model's loads sent after the request.
    left = [m for t, m in enumerate(sent) if m != answered or t > at]
    assert len(queues) == len(left)


def test_a_load_queued_behind_an_overdue_one_is_ready_only_after_it() -> None:
    queues = LoadQueues(until_answered=True)
    queues.push("n", ("a", ""), 0.0, drain_s=0.0, tail_s=5.0)
    queues.push("n", ("b", ""), 1.0, drain_s=0.0, tail_s=5.0)
    assert queues.ready_at("n", ("b", ""), 2.0) == 10.0
    assert queues.ready_at("n", ("b", ""), 20.0) == 25.0  # a is overdue: still loading, b after it
    assert queues.ready_at("n", ("c", ""), 20.0) is None
    assert queues.ready_at("other", ("b", ""), 20.0) is None


def _node(loaded: tuple[LoadedModel, ...] = (), busy: dict[str, int] | None = None) -> NodeView:
    busy = busy or {}
    return NodeView(
        "n",
        parallel=2,
        available=frozenset(SIZES),
        model_sizes=SIZES,
        loaded=loaded,
        in_flight=sum(busy.values()),
        in_flight_by_model=busy,
    )


def _two_loads(strategy: ModelAware) -> None:
    """a, then b, sent as loads to the one node; neither has answered since."""
    assert strategy.pick([_node()], RouteRequest("a:7b"), 0.0) == Pick("n", cold=True)
    assert strategy.pick([_node(busy={"a:7b": 1})], RouteRequest("b:7b"), 0.1) == Pick("n", cold=True)


def test_a_copy_whose_load_waits_behind_a_slower_one_is_no_free_slot() -> None:
    # b's load was estimated ready at about 6 s; at 15 s a, ahead of it, has not answered, so b's load has
    # not even started: a request for b waits at least b's whole load, though b has a slot free.
    view = _node((LoadedModel("a:7b"), LoadedModel("b:7b")), {"a:7b": 1, "b:7b": 1})
    strategy = ModelAware()
    _two_loads(strategy)
    assert strategy.wait_s(view, "b:7b", 15.0) >= strategy.load_s(view, "b:7b") - 1e-9
    fifo = ModelAware(Costs(queue_until_answered=False))
    _two_loads(fifo)
    assert fifo.wait_s(view, "b:7b", 15.0) == 0.0  # the estimate as made when it was sent: long past


def test_a_model_whose_load_is_still_queued_is_not_loaded_a_second_time() -> None:
    # At 18 s, past b's estimate and the router's patience with it, b's load is still queued behind a's
    # (neither answered), and /api/ps lists a alone (loading). Another request for b joins that load
    # (Ollama starts every pending request of a model with its one load); a second load would be counted
    # twice in the node's queue and would price evictions Ollama will not make.
    strategy = ModelAware()
    _two_loads(strategy)
    view = _node((LoadedModel("a:7b"),), {"a:7b": 1, "b:7b": 1})
    assert strategy.pick([view], RouteRequest("b:7b"), 18.0) == Pick("n", cold=False)
    # a is overdue (under way until its first token), then b's load, once.
    assert strategy.loader_free_at("n", 18.0) - 18.0 == pytest.approx(strategy.load_s(view, "b:7b"))
