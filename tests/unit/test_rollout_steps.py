"""The rolling update's state machine: every node goes through every step in order, one node at a time;
a failure stops it where it is, and resume continues from that step."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.domain.rollout import STEPS, Status, Step, advance, fail, resume, start


def run_all(state):  # type: ignore[no-untyped-def]
    seen = []
    while state.current is not None:
        seen.append(state.current)
        state = advance(state)
    return state, seen


@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4))
def test_every_node_every_step_in_order(nodes: list[str]) -> None:
    final, seen = run_all(start("m:1b", tuple(nodes)))
    assert final.status is Status.DONE
    assert seen == [(n, s) for n in nodes for s in STEPS]


@given(st.integers(0, 11))
def test_failure_stops_and_resume_continues_at_that_step(failing_at: int) -> None:
    state = start("m:1b", ("a", "b"))
    for _ in range(failing_at):
        state = advance(state)
    where = state.current
    stopped = fail(state, "check failed")
    assert stopped.status is Status.FAILED and stopped.current is None and stopped.error == "check failed"
    resumed = resume(stopped)
    assert resumed.current == where and resumed.error is None
    final, seen = run_all(resumed)
    assert final.status is Status.DONE and seen[0] == where


def test_drain_comes_first_and_undrain_last() -> None:
    assert STEPS[0] is Step.DRAIN and STEPS[-1] is Step.UNDRAIN
    assert start("m", ()).status is Status.DONE
