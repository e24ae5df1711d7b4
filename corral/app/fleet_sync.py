"""Keeping this process's fleet in step with the stored fleet state.

Every run-time change (`/admin/backends`) is written to the fleet store first and then applied here by
the same path that applies other processes' changes: read every override, compute the changes
(`corral.domain.fleet_state`), apply them. With a shared store (the key store's database) a poller
reads its version number every `auth.fleet_poll_s` and re-syncs when it moved, so a change made by any
replica or worker reaches this one within a poll plus a sync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from corral.adapters.fleetstore import FleetStore
from corral.app.discovery import Discovery
from corral.app.fleet import Fleet, Node
from corral.config import BackendSettings, HealthSettings
from corral.domain.breaker import CircuitBreaker
from corral.domain.fleet_state import FleetChanges, NodeOverride, Spec, WantedNode, changes, wanted

log = logging.getLogger(__name__)


def spec(settings: BackendSettings) -> dict[str, object]:
    return settings.model_dump(mode="json")


class FleetSync:
    def __init__(
        self,
        fleet: Fleet,
        discovery: Discovery,
        store: FleetStore,
        base: list[BackendSettings],
        health_defaults: HealthSettings,
        make_breaker: Callable[[], CircuitBreaker],
        poll_s: float = 1.0,
        removal_grace_s: float = 600.0,
        managed: Callable[[str], bool] = lambda name: True,
    ) -> None:
        self.managed = managed  # the nodes it keeps (not those a discovery source owns)
        self.fleet, self.discovery, self.store = fleet, discovery, store
        self.base = [spec(b) for b in base]
        self.health_defaults = health_defaults
        self.make_breaker = make_breaker
        self.poll_s = poll_s
        self.removal_grace_s = removal_grace_s
        self.version = -1  # of the state last applied
        self.discovering = False  # once serving, added nodes are checked and watched at once
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        # With workers: brings the sibling processes to the stored state (they answer once synced), so a
        # change answers only when every worker of this replica applies it (app/serve.py).
        self.siblings: Callable[[], Awaitable[object]] | None = None
        # With workers: a stored node's settings as this worker runs them (its share of the node's slots,
        # domain/shares.py); the YAML's nodes come already shared (app/workers.py worker_settings).
        self.localize: Callable[[Spec], Spec] | None = None

    # -- changes made through this process -------------------------------------------------------
    async def add(self, settings: BackendSettings, by: str | None) -> Node | None:
        await self.store.put(NodeOverride(settings.name, spec(settings), False, False), time.time(), by)
        await self._everywhere()
        return self.fleet.get(settings.name)

    async def remove(self, name: str, by: str | None) -> None:
        await self.store.put(NodeOverride(name, None, True, None), time.time(), by)
        await self._everywhere()

    async def set_draining(self, name: str, draining: bool, by: str | None) -> Node | None:
        await self.store.set_draining(name, draining, time.time(), by)
        await self._everywhere()
        return self.fleet.get(name)

    async def _everywhere(self) -> None:
        """Apply the stored state here, then in this replica's other workers (other replicas poll)."""
        await self.sync()
        if self.siblings is not None:
            await self.siblings()

    # -- following the stored state --------------------------------------------------------------
    async def rebase(self, backends: list[BackendSettings]) -> FleetChanges:
        """A new YAML (a configuration reload): the new base, with the stored overrides still on top."""
        self.base = [spec(b) for b in backends]
        return await self.sync()

    async def sync(self) -> FleetChanges:
        """Read the stored state and bring this process's fleet to it; returns what was done."""
        async with self._lock:
            version, overrides = await self.store.overrides()
            have = {
                n.name: WantedNode(n.name, spec(n.settings), n.draining) for n in self.fleet if self.managed(n.name)
            }
            if self.localize is not None:
                local = self.localize
                overrides = [replace(o, settings=local(o.settings)) if o.settings is not None else o for o in overrides]
            want = wanted(self.base, overrides)
            todo = changes(want, have)
            if todo:
                await self._apply(todo)
                self.fleet.reorder(list(want))  # every process lists the fleet alike, whatever its history
                log.info(
                    "fleet state v%d applied: removed %s, added %s, replaced %s, drained %s, undrained %s",
                    version, list(todo.remove), [n.name for n in todo.add], [n.name for n in todo.replace],
                    list(todo.drain), list(todo.undrain),
                )  # fmt: skip
            self.version = version
            return todo

    async def _apply(self, todo: FleetChanges) -> None:
        for name in todo.remove:
            self._retire(name)
        for node in todo.replace:
            self._retire(node.name)
        added = [self._add(n) for n in (*todo.add, *todo.replace)]
        for name in todo.drain:
            self._set_draining(name, True)
        for name in todo.undrain:
            self._set_draining(name, False)
        if self.discovering:
            await asyncio.gather(*(self.discovery.refresh(fresh) for fresh in added))
            for fresh in added:
                self.discovery.start(fresh)

    def _add(self, want: WantedNode) -> Node:
        settings = BackendSettings.model_validate(dict(want.settings))
        return self.fleet.add(settings, settings.health or self.health_defaults, self.make_breaker())

    def _set_draining(self, name: str, draining: bool) -> None:
        node = self.fleet.get(name)
        if node is not None and node.draining != draining:
            node.draining = draining
            self.fleet.capacity_changed()

    def _retire(self, name: str) -> None:
        """Drain, then remove: routing stops choosing the node now; its connections close once the
        requests still running on it have finished (or after the grace period)."""
        self.discovery.stop(name)
        node = self.fleet.remove(name)
        if node is None:
            return
        node.draining = True

        async def close_when_idle() -> None:
            try:
                async with asyncio.timeout(self.removal_grace_s):
                    await node.idle.wait()
            except TimeoutError:
                log.warning("node %s removed with requests still running after %ss", name, self.removal_grace_s)
            node.pool.close()

        task = asyncio.get_running_loop().create_task(close_when_idle())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- the poller ----------------------------------------------------------------------------
    def start(self) -> None:
        """Watch for other processes' changes (only a shared store can have any)."""
        self.discovering = True
        if self.store.shared and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                if await self.store.version() != self.version:
                    await self.sync()
                if failing:
                    log.warning("fleet state readable again (v%d)", self.version)
                failing = False
            except Exception as exc:  # the database is down: keep serving with the state last applied
                if not failing:
                    log.error("cannot read the fleet state (keeping v%d until it answers): %s", self.version, exc)
                failing = True

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        for task in list(self._closing):
            task.cancel()
