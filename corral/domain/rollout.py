"""A rolling update's state machine: per node drain → wait → pull → warm → check → undrain, one node at a
time, stopping at the first failure with the failed node left drained and the others serving.

Pure: the orchestrator (app/rollout.py) performs a step, then asks this module what comes next; the
state is plain data so that it can be stored, and `resume` continues from the step that failed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Step(StrEnum):
    DRAIN = "drain"
    WAIT = "wait"  # until the node's in-flight count is 0
    PULL = "pull"
    WARM = "warm"
    CHECK = "check"  # a real 1-token generate on that node
    UNDRAIN = "undrain"


STEPS: tuple[Step, ...] = tuple(Step)


class Status(StrEnum):
    RUNNING = "running"
    FAILED = "failed"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class RolloutState:
    model: str
    nodes: tuple[str, ...]
    keep_alive: str | None = None
    node_index: int = 0
    step_index: int = 0
    status: Status = Status.RUNNING
    error: str | None = None

    @property
    def current(self) -> tuple[str, Step] | None:
        """The node and step to perform next; None when the rollout is over."""
        if self.status is not Status.RUNNING or self.node_index >= len(self.nodes):
            return None
        return self.nodes[self.node_index], STEPS[self.step_index]

    @property
    def done_nodes(self) -> tuple[str, ...]:
        return self.nodes[: self.node_index]


def start(model: str, nodes: tuple[str, ...], keep_alive: str | None = None) -> RolloutState:
    status = Status.RUNNING if nodes else Status.DONE
    return RolloutState(model, nodes, keep_alive, status=status)


def advance(state: RolloutState) -> RolloutState:
    """The state after the current step succeeded."""
    if state.current is None:
        return state
    if state.step_index + 1 < len(STEPS):
        return replace(state, step_index=state.step_index + 1, error=None)
    node_index = state.node_index + 1
    status = Status.DONE if node_index >= len(state.nodes) else Status.RUNNING
    return replace(state, node_index=node_index, step_index=0, status=status, error=None)


def fail(state: RolloutState, error: str) -> RolloutState:
    """The current step failed: stop here (the node stays as the step left it, drained from DRAIN on)."""
    return replace(state, status=Status.FAILED, error=error)


def resume(state: RolloutState) -> RolloutState:
    """Continue a failed (or interrupted) rollout from the step where it stopped."""
    if state.status is Status.DONE:
        return state
    return replace(state, status=Status.RUNNING, error=None)
