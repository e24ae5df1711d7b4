"""The admission queue is bounded and serves every waiting key in turn."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.domain.admission import FairQueue, QueueFullError


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 1)), max_size=60), st.integers(1, 30))
def test_bounded_and_every_key_served_within_its_turn(pushes: list[tuple[str, int]], max_len: int) -> None:
    queue: FairQueue[int] = FairQueue(max_len, 60)
    accepted = []
    for i, (key, prio) in enumerate(pushes):
        try:
            queue.push(key, prio, 0.0, i)
            accepted.append((key, prio))
        except QueueFullError:
            assert len(queue) == max_len
        assert len(queue) <= max_len
    # Serve one entry per round: within a class, no key waits more than (number of keys) turns.
    served: list[tuple[str, int]] = []
    while len(queue):
        got = queue.serve(lambda e, box=[0]: box.__setitem__(0, box[0] + 1) or box[0] == 1)
        assert len(got) == 1
        served.append((got[0].key, got[0].priority))
    assert sorted(served) == sorted(accepted)
    priorities = [p for _, p in served]
    assert priorities == sorted(priorities, reverse=True)
    for prio in (1, 0):
        keys = [k for k, p in served if p == prio]
        distinct = len(set(keys))
        for key in set(keys):
            waiting = {k for k in keys}
            positions = [i for i, k in enumerate(keys) if k == key]
            first = positions[0]
            assert first < distinct or len(waiting) == 1


def test_a_burst_does_not_starve_a_later_key() -> None:
    queue: FairQueue[str] = FairQueue(100, 60)
    for i in range(10):
        queue.push("burst", 0, 0.0, f"b{i}")
    queue.push("late", 0, 1.0, "l0")
    order = []
    while len(queue):
        order += [e.payload for e in queue.serve(lambda e, n=[0]: n.__setitem__(0, n[0] + 1) or n[0] == 1)]
    assert order.index("l0") <= 1


def test_expiry_and_removal() -> None:
    queue: FairQueue[str] = FairQueue(3, 5)
    a = queue.push("k", 0, 0.0, "a")
    queue.push("k", 0, 2.0, "b")
    assert [e.payload for e in queue.expired(5.0)] == ["a"]
    assert queue.remove(a) is False
    queue.push("k", 0, 3.0, "c")
    queue.push("j", 0, 3.0, "d")
    with pytest.raises(QueueFullError):
        queue.push("j", 0, 3.0, "e")


@given(st.lists(st.sampled_from("abcd"), min_size=1, max_size=60), st.integers(1, 5))
def test_a_round_stops_when_capacity_is_exhausted_and_keeps_the_rest_in_order(keys: list[str], slots: int) -> None:
    """A freed slot is offered until it is taken: never more admissions than capacity, the admitted
    ones are the first in fair order, and everyone else keeps their place."""
    q: FairQueue[int] = FairQueue(100, 60.0)
    for i, key in enumerate(keys):
        q.push(key, 0, float(i), i)
    order = [e.payload for e in q.fair_order()]
    taken: list[int] = []

    def admit(entry: object) -> bool:
        taken.append(entry.payload)  # type: ignore[attr-defined]
        return True

    q.serve(admit, lambda: len(taken) >= slots)
    assert taken == order[:slots]
    assert len(q) == len(keys) - len(taken)
