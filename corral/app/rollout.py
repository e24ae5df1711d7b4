"""Rolling updates run by the gateway: per node drain → wait for in-flight to finish → pull → warm →
check → undrain, one node at a time (domain/rollout.py decides the order). The state is stored after
every step, so a failure or a restart leaves a rollout that `--resume` continues; every step is an
admin audit record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from corral.adapters.rollout_store import SqlRolloutStore
from corral.app.fleet import Fleet, Node
from corral.app.model_calls import ModelCallFailed, ModelCalls
from corral.domain.errors import InvalidRequest, NoSuchNode
from corral.domain.fleet import NodeKind
from corral.domain.rollout import RolloutState, Status, Step, advance, fail, resume, start

log = logging.getLogger(__name__)
_DRAINED_STEPS = frozenset({Step.WAIT, Step.PULL, Step.WARM, Step.CHECK})


def state_json(state: RolloutState, running: bool) -> dict[str, object]:
    current = state.current
    return {
        "model": state.model,
        "nodes": list(state.nodes),
        "keep_alive": state.keep_alive,
        "status": state.status.value,
        "running": running,
        "node": state.nodes[state.node_index] if state.node_index < len(state.nodes) else None,
        "step": current[1].value if current else None,
        "done_nodes": list(state.done_nodes),
        "error": state.error,
    }


class Rollouts:
    def __init__(
        self,
        fleet: Fleet,
        calls: ModelCalls,
        store: SqlRolloutStore,
        audit: Callable[[str, dict[str, object]], None],
        drain_timeout_s: float,
    ) -> None:
        self.fleet = fleet
        self.calls = calls
        self.store = store
        self.audit = audit
        self.drain_timeout_s = drain_timeout_s
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # With workers (app/serve.py): the models whose rollout a sibling worker runs, and the drain of a
        # rollout step applied in the siblings too (a drain lives in each process's memory).
        self.elsewhere: Callable[[], Awaitable[set[str]]] | None = None
        self.drain_siblings: Callable[[str, bool], Awaitable[object]] | None = None
        self.in_flight_elsewhere: Callable[[str], Awaitable[int]] | None = None  # a node's, in the siblings

    def running(self, model: str) -> bool:
        task = self.tasks.get(model)
        return task is not None and not task.done()

    def running_here(self) -> set[str]:
        return {model for model in self.tasks if self.running(model)}

    async def running_anywhere(self) -> set[str]:
        """The rollouts this replica runs, whichever worker runs each."""
        found = self.running_here()
        if self.elsewhere is not None:
            found |= await self.elsewhere()
        return found

    async def _drain(self, node: Node, draining: bool) -> None:
        if node.draining != draining:
            node.draining = draining
            self.fleet.capacity_changed()
        if self.drain_siblings is not None:
            await self.drain_siblings(node.name, draining)

    async def begin(
        self, model: str, nodes: list[str] | None, keep_alive: str | None, resuming: bool, by: str | None
    ) -> RolloutState:
        if model in await self.running_anywhere():
            raise InvalidRequest(f"a rollout of {model} is running already", param="model")
        if resuming:
            stored = await self.store.get(model)
            if stored is None or stored.status is Status.DONE:
                raise InvalidRequest(f"no stopped rollout of {model} to resume", param="resume")
            state = resume(stored)
        else:
            names = (
                list(dict.fromkeys(nodes))
                if nodes
                else [n.name for n in self.fleet if n.kind is NodeKind.OLLAMA and n.health.up]
            )
            for name in names:
                node = self.fleet.get(name)
                if node is None:
                    raise NoSuchNode(f"no node named '{name}' (nodes)")
                if node.kind is NodeKind.OPENAI:
                    raise InvalidRequest(f"node '{name}' is an OpenAI-type node; it does not manage models")
            state = start(model, tuple(names), keep_alive)
        await self.store.save(state)
        self.audit("rollout_started" if not resuming else "rollout_resumed", {"model": model, "by": by})
        self.tasks[model] = asyncio.get_running_loop().create_task(self._run(state))
        return state

    async def _run(self, state: RolloutState) -> None:
        current = state.current
        if current is not None and current[1] in _DRAINED_STEPS:
            # Resuming mid-node: the drain may have been lost (drain state lives in memory, and Corral may
            # have restarted since), and these steps must not run on a node that serves.
            node = self.fleet.get(current[0])
            if node is not None:
                await self._drain(node, True)
        while (current := state.current) is not None:
            name, step = current
            node = self.fleet.get(name)
            try:
                if node is None:
                    raise ModelCallFailed(f"node {name} is no longer in the fleet")
                await self._step(node, step, state)
            except ModelCallFailed as exc:
                state = fail(state, f"{step.value} on {name}: {exc}")
                self.audit("rollout_step", {"model": state.model, "node": name, "step": step.value, "ok": False,
                                            "error": str(exc)})  # fmt: skip
                self.audit("rollout_failed", {"model": state.model, "node": name, "step": step.value})
                await self.store.save(state)
                log.warning("rollout of %s stopped: %s", state.model, state.error)
                return
            except Exception as exc:  # never leave a stored "running" rollout behind a crashed task
                log.exception("rollout of %s crashed", state.model)
                state = fail(state, f"{step.value} on {name}: {exc!r}")
                await self.store.save(state)
                return
            self.audit("rollout_step", {"model": state.model, "node": name, "step": step.value, "ok": True})
            state = advance(state)
            await self.store.save(state)
        self.audit("rollout_finished", {"model": state.model, "nodes": list(state.nodes)})

    async def _step(self, node: Node, step: Step, state: RolloutState) -> None:
        if step is Step.DRAIN:
            await self._drain(node, True)
        elif step is Step.WAIT:
            await self.wait_idle(node, self.drain_timeout_s)
            await self._siblings_idle(node)
        elif step is Step.PULL:
            await self.calls.pull(node, state.model)
        elif step is Step.WARM:
            await self.calls.warm(node, state.model, state.keep_alive)
        elif step is Step.CHECK:
            await self.calls.check(node, state.model)
        else:
            await self._drain(node, False)

    async def _siblings_idle(self, node: Node) -> None:
        """With workers: the drained node's requests that the other workers still run must finish too."""
        if self.in_flight_elsewhere is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        while (count := await self.in_flight_elsewhere(node.name)) > 0:
            if loop.time() > deadline:
                raise ModelCallFailed(
                    f"node {node.name} still has {count} request(s) in flight after {self.drain_timeout_s:g}s"
                )
            await asyncio.sleep(0.1)  # other processes' requests: nothing to wait on here but their count

    @staticmethod
    async def wait_idle(node: Node, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while node.in_flight > 0:
                    await node.idle.wait()  # set by the request that brings in_flight to 0
        except TimeoutError:
            raise ModelCallFailed(
                f"node {node.name} still has {node.in_flight} request(s) in flight after {timeout_s:g}s"
            ) from None
