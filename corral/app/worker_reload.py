"""Reloading a replica of several workers (`server.workers` > 1) as one.

The parent is the only reader of the configuration file (app/workers.py): on SIGHUP (or an edit it sees
with `--watch`) it validates the file once and leaves each worker an order (`ReloadOrder`: its share of
the settings, or the problems that refused the file), numbered, then signals every worker. A worker that
serves `POST /admin/reload` asks its parent for that same reload (the trigger's name in the run folder,
then SIGHUP to the parent) and answers once it and each sibling have applied the order, so the answer
and every later request, whichever worker takes it, see one configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

from corral.app.config_state import ConfigVersion, ReloadResult
from corral.app.reload import refused, reload
from corral.app.siblings import WorkerContext

if TYPE_CHECKING:
    from corral.app.build import App
    from corral.app.siblings import Siblings

log = logging.getLogger(__name__)

_ANSWER_S = 30.0  # how long an admin reload waits for the parent and the siblings


class WorkerReloads:
    def __init__(self, app: App, worker: WorkerContext) -> None:
        self.app = app
        self.worker = worker
        self.siblings: Siblings | None = None
        order = worker.reload_order()
        self.applied = order.seq if order is not None else 0  # a restarted worker starts on the latest order
        self._changed = asyncio.Condition()
        if worker.version:
            app.config.version = ConfigVersion(worker.version, app.config.version.loaded_at)
        if worker.index != 0:
            # One reload of the replica counts once in its fleet-wide /metrics (siblings' counters are summed).
            app.config.on_result = lambda result: None

    async def apply(self) -> None:
        """SIGHUP from the parent: apply the order it left (once, however many signals arrive)."""
        order = self.worker.reload_order()
        if order is None:
            log.warning("reload requested, but the parent left no configuration to apply")
            return
        if order.seq <= self.applied:
            return
        if order.settings is None:
            refused(self.app, order.trigger, order.problems, at=order.at)
        else:
            await reload(self.app, order.settings, order.trigger, version=order.version, at=order.at)
        async with self._changed:
            self.applied = max(self.applied, order.seq)
            self._changed.notify_all()

    async def seq(self, message: dict[str, object]) -> int:
        """A sibling asks which order this worker has applied."""
        return self.applied

    async def through_parent(self, trigger: str) -> ReloadResult:
        """POST /admin/reload in a worker: the whole replica reloads; the result once every worker has it."""
        before = self.applied
        staged = self.worker.request_path().with_suffix(".tmp")
        staged.write_text(trigger, encoding="utf-8")
        staged.replace(self.worker.request_path())
        os.kill(os.getppid(), signal.SIGHUP)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ANSWER_S
        try:
            async with asyncio.timeout(_ANSWER_S), self._changed:
                await self._changed.wait_for(lambda: self.applied > before)
        except TimeoutError:
            return refused(self.app, trigger, [("(reload)", "the supervising process did not answer in time")])
        mine = self.app.config.last
        assert mine is not None
        target = self.applied
        while self.siblings is not None and loop.time() < deadline:
            answers = await self.siblings.ask("reload_seq")  # a sibling that is down is left out
            if all(isinstance(a, int) and a >= target for a in answers):
                break
            await asyncio.sleep(0.05)  # other processes' progress: nothing to wait on but their answer
        else:
            if self.siblings is not None:
                log.warning("admin reload: not every worker applied reload %d within %ss", target, _ANSWER_S)
        return mine
