"""Database copies for `corral backup` over both stores, each restored into the other kind.

A table the project's migrations do not know today (`fleet_probe`, standing for the fleet-state tables a
later migration adds) travels too: the copy finds tables by reflection, not by a list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa

from corral.adapters import db_snapshot
from corral.adapters.audit import AuditRecord, SqlAuditSink
from corral.adapters.keystore import KeySpec, SqlKeyStore
from corral.adapters.migrations import metadata, open_engine

T = TypeVar("T")
NOW = 1_700_000_000.0
PROBE = sa.Table(  # as a migration would declare it: each dialect gets its own column types
    "fleet_probe",
    sa.MetaData(),
    sa.Column("node", sa.String(64), primary_key=True),
    sa.Column("drained", sa.Boolean),
    sa.Column("at", sa.DateTime(timezone=True)),
)


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def _create_probe(url: str, row: dict[str, object] | None = None) -> None:
    engine = open_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(PROBE.create)
        if row:
            await conn.execute(PROBE.insert(), row)
    await engine.dispose()


async def _fill(url: str) -> tuple[str, str]:
    """Two keys (one revoked), two audit rows, one probe row; the live key's plaintext and the revoked one's."""
    store = SqlKeyStore(url)
    await store.migrate()
    _, live = await store.create(KeySpec("app", models=("llama*",), rpm=60), NOW)
    _, dead = await store.create(KeySpec("old"), NOW)
    await store.revoke("old", NOW + 1)
    sink = SqlAuditSink(store.engine)
    await sink.write(AuditRecord.for_request(NOW, route="/api/chat", status=200, detail={"a": [1]}))
    await sink.write(AuditRecord(NOW + 1, "admin", action="keys.revoke"))
    await sink.close()
    await store.close()
    await _create_probe(url, {"node": "a", "drained": True, "at": datetime.fromtimestamp(NOW, UTC)})
    return live, dead


async def _check(url: str, live: str, dead: str) -> None:
    store = SqlKeyStore(url)
    found = await store.lookup(live)
    assert found is not None and found.name == "app" and found.spec.models == ("llama*",) and found.spec.rpm == 60
    assert found.created_at == NOW and found.revoked_at is None
    revoked = await store.lookup(dead)
    assert revoked is not None and revoked.revoked_at == NOW + 1
    # Ids continue after the restored ones (PostgreSQL's sequences are moved past them).
    await store.create(KeySpec("after-restore"), NOW + 2)
    async with store.engine.connect() as conn:
        audit = (await conn.execute(sa.text("SELECT route, action, detail FROM audit_log ORDER BY id"))).all()
        probe = (await conn.execute(sa.text("SELECT node, drained, at FROM fleet_probe"))).all()
    assert [(r[0], r[1]) for r in audit] == [("/api/chat", None), (None, "keys.revoke")]
    assert [(r[0], bool(r[1])) for r in probe] == [("a", True)] and probe[0][2] is not None
    sink = SqlAuditSink(store.engine)
    await sink.write(AuditRecord.for_request(NOW + 3, route="/api/tags"))
    await sink.close()
    await store.close()


@pytest.mark.parametrize("direction", ["sqlite->postgresql", "postgresql->sqlite"])
def test_a_copy_restores_into_the_other_kind_of_database(direction: str, postgres_url: str, tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'keys.db'}"
    source, target = (sqlite_url, postgres_url) if direction.startswith("sqlite") else (postgres_url, sqlite_url)
    folder = tmp_path / "backup"
    folder.mkdir()

    async def body() -> None:
        live, dead = await _fill(source)
        written, counts, revision = await db_snapshot.snapshot(source, folder)
        # Every table: the migrations' own (empty ones too, e.g. rollouts) and the probe.
        assert {"api_keys": 2, "audit_log": 2, "fleet_probe": 1}.items() <= counts.items() and revision is not None
        assert set(counts) >= {t.name for t in metadata.sorted_tables}
        assert written == ("database.sqlite" if source == sqlite_url else "tables")
        data = db_snapshot.read_snapshot(folder, written)
        assert await db_snapshot.row_counts(target) is None or target == postgres_url
        # A table no migration creates is restored where the target has it, and named where it has not.
        store = SqlKeyStore(target)
        await store.migrate()
        await store.create(KeySpec("made-after-the-loss"), NOW)  # replaced by the backup's rows
        await store.close()
        assert await db_snapshot.restore(target, data) == ["fleet_probe"]
        await _create_probe(target)
        assert await db_snapshot.restore(target, data) == []
        assert await db_snapshot.row_counts(target) == counts
        await _check(target, live, dead)

    run(body())


def test_a_missing_sqlite_file_is_named_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere.db'}"
    with pytest.raises(db_snapshot.SnapshotError, match=r"nowhere\.db does not exist"):
        run(db_snapshot.snapshot(url, tmp_path))
    assert not (tmp_path / "nowhere.db").exists()
