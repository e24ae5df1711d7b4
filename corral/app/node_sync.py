"""Where nodes come from: the static `backends` list and the discovery sources each own a set of nodes,
and `NodeSync.apply(source, nodes)` brings the fleet to a source's new set.

A new node is health-checked (and its models read) before it joins the fleet, so no request meets a node
nobody has looked at. A node that leaves is drained: it takes no new request, finishes what it has, and
is removed once idle (or after `drain_s`). A node whose address or API changes is replaced: the new one
is checked, takes the name, and the old one finishes its requests on its own connections. Any other change
(limits, priority, models) is made in place. Nodes added through /admin/backends belong to no source and
are left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from corral.app.discovery import Discovery
from corral.app.fleet import Fleet, Node
from corral.config import BackendSettings, HealthSettings
from corral.domain.breaker import CircuitBreaker
from corral.domain.config_diff import NodeChanges, diff_nodes

log = logging.getLogger(__name__)

STATIC = "backends"  # the source name of the configuration's own list


def _dump(backend: BackendSettings) -> dict[str, Any]:
    return backend.model_dump(mode="json")


class NodeSync:
    def __init__(
        self,
        fleet: Fleet,
        discovery: Discovery,
        make_breaker: Callable[[], CircuitBreaker],
        health_defaults: HealthSettings,
        drain_s: float,
    ) -> None:
        self.fleet = fleet
        self.discovery = discovery
        self.make_breaker = make_breaker
        self.health_defaults = health_defaults
        self.drain_s = drain_s
        self.owned: dict[str, dict[str, BackendSettings]] = {}  # source -> its nodes by name
        self._retiring: set[asyncio.Task[None]] = set()
        self._leaving: dict[str, Node] = {}  # nodes draining on their way out, by name
        self._lock = asyncio.Lock()

    def health_for(self, backend: BackendSettings) -> HealthSettings:
        return backend.health or self.health_defaults

    def seed(self, source: str, backends: Sequence[BackendSettings]) -> None:
        """At start-up: the nodes join at once (serve checks them all before it listens)."""
        for backend in backends:
            self.fleet.add(backend, self.health_for(backend), self.make_breaker())
        self.owned[source] = {b.name: b for b in backends}

    def owner(self, name: str) -> str | None:
        return next((source for source, nodes in self.owned.items() if name in nodes), None)

    async def apply(self, source: str, backends: Sequence[BackendSettings]) -> NodeChanges:
        """Bring the fleet to `backends` for `source`. Names another source owns are skipped (logged)."""
        async with self._lock:
            wanted: dict[str, BackendSettings] = {}
            for backend in backends:
                other = self.owner(backend.name)
                if other not in (None, source) or backend.name in wanted:
                    log.warning("node %s from %s skipped: the name is taken (%s)", backend.name, source, other)
                    continue
                present = self.fleet.get(backend.name)
                if other is None and present is not None and present is not self._leaving.get(backend.name):
                    log.warning("node %s from %s skipped: a node added at run time has the name", backend.name, source)
                    continue
                wanted[backend.name] = backend
            before = self.owned.get(source, {})
            changes = diff_nodes({n: _dump(b) for n, b in before.items()}, {n: _dump(b) for n, b in wanted.items()})
            if changes.empty:
                self.owned[source] = wanted
                return changes
            fresh = [wanted[n] for n in (*changes.added, *changes.replaced)]
            for name in changes.updated:
                node = self.fleet.get(name)
                if node is None:  # removed at run time through the admin API: the source brings it back
                    fresh.append(wanted[name])
                else:
                    self.fleet.update(node, wanted[name], self.health_for(wanted[name]))
            await self._join(fresh)
            for name in changes.removed:
                node = self.fleet.get(name)
                if node is not None:
                    self._retire(node)
            self.owned[source] = wanted
            if not changes.empty:
                log.info(
                    "nodes from %s: added %s, removed %s, replaced %s, updated %s",
                    source,
                    list(changes.added),
                    list(changes.removed),
                    list(changes.replaced),
                    list(changes.updated),
                )
            return changes

    async def _join(self, backends: Sequence[BackendSettings]) -> None:
        """Check the new nodes (concurrently), then let them in, each in place of any namesake."""
        nodes = [Fleet.new_node(b, self.health_for(b), self.make_breaker()) for b in backends]
        await asyncio.gather(*(self.discovery.refresh(node) for node in nodes))
        for node in nodes:
            old = self.fleet.get(node.name)
            self.discovery.stop(node.name)
            self.fleet.adopt(node)
            self.discovery.start(node)
            if old is not None and old is not self._leaving.get(node.name):
                self._retire(old)

    def _retire(self, node: Node) -> None:
        """Drain `node`: no new requests; it leaves the fleet (unless replaced) once idle."""
        node.draining = True
        self._leaving[node.name] = node
        self.fleet.capacity_changed()
        task = asyncio.get_running_loop().create_task(self._finish(node))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _finish(self, node: Node) -> None:
        try:
            async with asyncio.timeout(self.drain_s):
                await node.idle.wait()
        except TimeoutError:
            log.warning(
                "node %s still had %d request(s) after %ss of draining", node.name, node.in_flight, self.drain_s
            )
        if self._leaving.get(node.name) is node:
            del self._leaving[node.name]
        if self.fleet.get(node.name) is node:
            self.discovery.stop(node.name)
            self.fleet.remove(node.name)
        node.pool.close()
        log.info("node %s drained and removed", node.name)

    async def drop_source(self, source: str) -> None:
        """A source that is gone from the configuration: its nodes drain."""
        await self.apply(source, [])
        self.owned.pop(source, None)

    def stop(self) -> None:
        for task in list(self._retiring):
            task.cancel()
