"""A request that was to load a model and failed before any answer (refused, unreachable): routing
forgets the load it had counted on (corral/domain/load_queue.py `failed`, ModelAware.load_failed)."""

from __future__ import annotations

from corral.domain.fleet import Pick, RouteRequest
from corral.domain.load_queue import LoadQueues
from corral.domain.model_aware import ModelAware
from tests.unit.one_runner import one_runner

MODELS = frozenset({"a:7b", "b:7b"})


def test_only_the_failed_load_leaves_the_queue() -> None:
    queues = LoadQueues()
    queues.push("n", ("a", ""), 0.0, 0.0, 10.0)
    queues.push("n", ("b", ""), 1.0, 0.0, 10.0)
    assert queues.free_at("n", 2.0) == 20.0
    assert queues.failed("n", ("a", ""), sent_at=0.5)  # sent after the pick that booked it
    assert queues.free_at("n", 2.0) == 11.0  # b alone, from when it was sent
    assert not queues.failed("n", ("a", ""), sent_at=0.5)  # nothing left of it
    assert not queues.failed("n", ("b", ""), sent_at=0.5)  # b was booked later than that request
    assert queues.failed("n", ("b", ""), sent_at=1.5) and queues.free_at("n", 2.0) == 2.0


def test_a_refused_load_frees_the_loader_and_is_not_a_copy_loading() -> None:
    node = [one_runner("n", "b:7b", 0, MODELS)]
    strategy = ModelAware()
    assert strategy.pick(node, RouteRequest("a:7b"), 0.0) == Pick("n", cold=True)
    assert strategy.loader_free_at("n", 0.1) > 0.1  # its load holds the loader
    strategy.load_failed("n", "a:7b", "", sent_at=0.05)  # the node refused it (a 503, say)
    assert strategy.loader_free_at("n", 0.1) == 0.1
    # The next request for the model is a load again, not a wait on a copy that is not coming.
    assert strategy.pick(node, RouteRequest("a:7b"), 0.2) == Pick("n", cold=True)
