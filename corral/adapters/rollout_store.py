"""Where each model's rolling update stands, in the key store's database (table `rollouts`), so that a
rollout stopped by a failure or a restart continues with `--resume`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.adapters.migrations import open_engine, rollouts, upgrade
from corral.domain.rollout import RolloutState, Status


def _state(m: Any) -> RolloutState:
    return RolloutState(
        model=m["model"],
        nodes=tuple(m["nodes"]),
        keep_alive=m["keep_alive"],
        node_index=m["node_index"],
        step_index=m["step_index"],
        status=Status(m["status"]),
        error=m["error"],
    )


class SqlRolloutStore:
    def __init__(self, url_or_engine: str | AsyncEngine) -> None:
        self._owns_engine = isinstance(url_or_engine, str)
        self.engine = open_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self._migrated = False

    async def _ready(self) -> None:
        if not self._migrated:
            await upgrade(self.engine)
            self._migrated = True

    async def get(self, model: str) -> RolloutState | None:
        await self._ready()
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(rollouts).where(rollouts.c.model == model))).first()
        return None if row is None else _state(row._mapping)

    async def all(self) -> list[RolloutState]:
        await self._ready()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(rollouts).order_by(rollouts.c.updated_at.desc()))).all()
        return [_state(r._mapping) for r in rows]

    async def save(self, state: RolloutState) -> None:
        await self._ready()
        values = {
            "nodes": list(state.nodes),
            "keep_alive": state.keep_alive,
            "node_index": state.node_index,
            "step_index": state.step_index,
            "status": state.status.value,
            "error": state.error,
            "updated_at": datetime.now(UTC),
        }
        async with self.engine.begin() as conn:
            done = await conn.execute(rollouts.update().where(rollouts.c.model == state.model).values(**values))
            if done.rowcount == 0:
                await conn.execute(rollouts.insert().values(model=state.model, **values))

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()
