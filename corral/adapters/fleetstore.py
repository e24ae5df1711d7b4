"""Where run-time fleet changes are kept: in the key store's database (shared by every replica and
worker), or in memory when Corral runs without one.

Thin on purpose: rows in, `NodeOverride`s out. What the overrides mean, and what a process must do to
follow them, is `corral.domain.fleet_state`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from corral.adapters.migrations import fleet_nodes, fleet_version, open_engine, upgrade
from corral.domain.errors import GatewayError
from corral.domain.fleet_state import NodeOverride


class FleetStoreUnavailable(GatewayError):
    """The database cannot be reached: a run-time change is refused (503) rather than made on this
    process alone, where the other replicas would never hear of it."""

    status = 503


class FleetStore(Protocol):
    shared: bool  # whether other processes may change it (then it is polled)

    async def migrate(self) -> None: ...
    async def version(self) -> int: ...
    async def overrides(self) -> tuple[int, list[NodeOverride]]: ...
    async def put(self, override: NodeOverride, now: float, by: str | None = None) -> int: ...
    async def set_draining(self, name: str, draining: bool, now: float, by: str | None = None) -> int: ...
    async def close(self) -> None: ...


class MemoryFleetStore:
    """One process's own overrides: today's behaviour without a database (lost on restart)."""

    shared = False

    def __init__(self) -> None:
        self._version = 0
        self._rows: dict[str, NodeOverride] = {}

    async def migrate(self) -> None:
        return None

    async def version(self) -> int:
        return self._version

    async def overrides(self) -> tuple[int, list[NodeOverride]]:
        return self._version, list(self._rows.values())

    async def put(self, override: NodeOverride, now: float, by: str | None = None) -> int:
        self._version += 1
        self._rows[override.name] = override
        return self._version

    async def set_draining(self, name: str, draining: bool, now: float, by: str | None = None) -> int:
        old = self._rows.get(name) or NodeOverride(name)
        return await self.put(NodeOverride(name, old.settings, old.removed, draining), now, by)

    async def close(self) -> None:
        return None


def _override(row: sa.Row[Any]) -> NodeOverride:
    m = row._mapping
    return NodeOverride(m["name"], m["settings"], bool(m["removed"]), m["draining"])


class SqlFleetStore:
    """`SqlFleetStore(engine)` over the key store's engine, or `SqlFleetStore("postgresql://...")`."""

    shared = True

    def __init__(self, url_or_engine: str | AsyncEngine) -> None:
        self._owns_engine = isinstance(url_or_engine, str)
        self.engine = open_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine

    async def migrate(self) -> None:
        await upgrade(self.engine)

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()

    @asynccontextmanager
    async def _connect(self, immediate: bool = False) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                if immediate:
                    conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise FleetStoreUnavailable(f"the fleet state database cannot be reached: {exc}") from exc

    async def version(self) -> int:
        """The poll: one single-row read, answered from the primary key."""
        async with self._connect() as conn:
            value = (await conn.execute(sa.select(fleet_version.c.version).where(fleet_version.c.id == 1))).scalar()
        return int(value or 0)

    async def overrides(self) -> tuple[int, list[NodeOverride]]:
        """The version and every override, read in one transaction (so they belong together)."""
        async with self._connect() as conn, conn.begin():
            version = (await conn.execute(sa.select(fleet_version.c.version))).scalar()
            rows = (await conn.execute(fleet_nodes.select().order_by(fleet_nodes.c.name))).all()
        return int(version or 0), [_override(row) for row in rows]

    async def put(self, override: NodeOverride, now: float, by: str | None = None) -> int:
        """Store a node's whole override (added, removed) and bump the version."""
        values = {
            "settings": None if override.settings is None else dict(override.settings),
            "removed": override.removed,
            "draining": override.draining,
        }
        return await self._write(override.name, values, values, now, by)

    async def set_draining(self, name: str, draining: bool, now: float, by: str | None = None) -> int:
        """Change only the drain state, keeping whatever else the row says (e.g. a run-time node's URL)."""
        return await self._write(name, {"draining": draining}, {"removed": False, "draining": draining}, now, by)

    async def _write(
        self, name: str, update: dict[str, Any], insert: dict[str, Any], now: float, by: str | None
    ) -> int:
        """Bump the version and write one row, in one transaction. Bumping first takes the counter's row
        lock (PostgreSQL) or the write lock (SQLite, IMMEDIATE), so writers queue and each change gets
        its own version; the update-else-insert cannot race another writer."""
        stamp = {"updated_at": datetime.fromtimestamp(now, UTC), "updated_by": by}
        async with self._connect(immediate=True) as conn, conn.begin():
            await conn.execute(fleet_version.update().values(version=fleet_version.c.version + 1))
            version = int((await conn.execute(sa.select(fleet_version.c.version))).scalar() or 0)
            done = await conn.execute(
                fleet_nodes.update().where(fleet_nodes.c.name == name).values(version=version, **stamp, **update)
            )
            if done.rowcount == 0:
                await conn.execute(fleet_nodes.insert().values(name=name, version=version, **stamp, **insert))
        return version
