"""The residency controller at work: counts arrivals, asks `corral.domain.residency` every
`residency.interval_s` what to load, pin or unpin, and sends each action to its node as Ollama's own
way to load a model: a generate with an empty prompt and a `keep_alive` (docs/ollama-api.md).
Keep-warm (`residency.keep_warm`, corral.domain.keep_warm) runs on the same tick, with or without the
controller (`residency.enabled`), and its refreshes go out the same way."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import fields
from typing import Any

import orjson

from corral.adapters.node_api import call
from corral.app.fleet import Fleet
from corral.config import ResidencySettings
from corral.domain.errors import GatewayError
from corral.domain.fleet import NodeKind, NodeView, RouteRequest
from corral.domain.keep_alive import json_keep_alive, keep_alive_ns
from corral.domain.keep_warm import KeepWarm, KeepWarmParams
from corral.domain.model_aware import ModelAware
from corral.domain.residency import Action, Residency, ResidencyParams
from corral.domain.routing import Strategy

log = logging.getLogger(__name__)


class ResidencyTask:
    def __init__(self, fleet: Fleet, strategy: Strategy, settings: ResidencySettings, timeout_s: float) -> None:
        self.fleet = fleet
        self.strategy = strategy
        self.settings = settings
        self.timeout_s = timeout_s
        # Every controller parameter the `residency:` section sets, by name (the others keep their defaults).
        configured = type(settings).model_fields
        params = ResidencyParams(
            **{f.name: getattr(settings, f.name) for f in fields(ResidencyParams) if f.name in configured}
        )
        self.controller = Residency(params)
        self.keep_warm = KeepWarm(keep_warm_params(settings)) if settings.keep_warm else None
        # Waits, load and service times are the routing cost model's (corral.domain.residency.RoutingEstimates),
        # learnt when model-aware routes; priors otherwise.
        self._estimates = strategy if isinstance(strategy, ModelAware) else ModelAware()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.failures = 0

    def observe(self, model: str) -> None:
        self.controller.observe(model, self.loop.time())

    def start(self) -> None:
        if self._task is None:
            self._task = self.loop.create_task(self._run())

    def stop(self) -> None:
        for task in (self._task, *self._sending):
            if task is not None:
                task.cancel()
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_s)
            try:
                self.tick()
            except Exception:  # a decision must never stop the loop; the next tick starts afresh
                log.exception("residency decision failed")

    def tick(self) -> list[Action]:
        now = self.loop.time()
        views = [v for v in self.fleet.snapshot(now) if v.kind is NodeKind.OLLAMA]
        actions = self.controller.decide(views, self._estimates, now) if self.settings.enabled else []
        if self.keep_warm is not None:
            # `/api/ps` expiries are wall-clock times.
            refreshes = self.keep_warm.decide(views, time.time())
            self.controller.recent += [(now, a) for a in refreshes]  # shown with the decisions
            del self.controller.recent[:-50]
            actions = [*actions, *refreshes]
        for action in actions:
            if action.kind == "preload" and isinstance(self.strategy, ModelAware):
                self._announce(views, action, now)
            task = self.loop.create_task(self._send(action))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return actions

    def _announce(self, views: list[NodeView], action: Action, now: float) -> None:
        """Tell routing a load is coming on that node, so that it counts the replica from now on (as it
        does for a load a request of its own started)."""
        others = frozenset(v.name for v in views if v.name != action.node)
        self.strategy.pick(views, RouteRequest(action.model, exclude=others, est_tokens=1), now)

    async def _send(self, action: Action) -> None:
        node = self.fleet.get(action.node)
        if node is None:
            return
        body = orjson.dumps(
            {"model": action.model, "prompt": "", "stream": False, "keep_alive": json_keep_alive(action.keep_alive)}
        )
        try:
            status, _ = await call(
                node.pool, "POST", node.settings.base_path + "/api/generate", body=body, timeout_s=self.timeout_s
            )
        except GatewayError as exc:
            status = 0
            log.warning("residency %s of %s on %s failed: %s", action.kind, action.model, action.node, exc)
        if status != 200:
            self.failures += 1

    def status(self) -> dict[str, Any]:
        now = self.loop.time()
        return {
            "enabled": self.settings.enabled,
            "keep_warm": self.keep_warm is not None,
            "refreshed": 0 if self.keep_warm is None else self.keep_warm.refreshed,
            "pinned": self.controller.pinned(),
            "failures": self.failures,
            "decisions": [
                {"ago_s": round(now - at, 1), "action": a.kind, "node": a.node, "model": a.model,
                 "keep_alive": a.keep_alive, "reason": a.reason}
                for at, a in reversed(self.controller.recent)
            ][:20],
        }  # fmt: skip


def keep_warm_params(settings: ResidencySettings) -> KeepWarmParams:
    """The rule's parameters from the `residency:` section (its keep_alive is finite: corral.config checks)."""
    ns = keep_alive_ns(json_keep_alive(settings.keep_alive)) or 0
    return KeepWarmParams(settings.keep_alive, ns / 1e9, settings.keep_warm_margin_s)
