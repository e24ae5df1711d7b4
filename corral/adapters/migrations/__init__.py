"""The database schema (SQLAlchemy Core tables) and its alembic migrations, run from code at start-up.

The tables here describe the schema at head; the files in `versions/` are the frozen steps that build it.
A new column means a new version file and a change here, checked by `tests/contract/test_keystore.py`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

HERE = Path(__file__).parent
# Any fixed number: replicas starting together take turns at migrating (PostgreSQL only).
_MIGRATION_LOCK = 0x636F7272616C

metadata = sa.MetaData()
_ts = sa.DateTime(timezone=True)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
    sa.Column("max_concurrency", sa.Integer),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expires_at", _ts),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("revoked_at", _ts),
    sa.Column("nodes", sa.JSON),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", _ts, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("request_id", sa.String(64)),
    sa.Column("key_name", sa.String(128), index=True),
    sa.Column("key_prefix", sa.String(16)),
    sa.Column("client_ip", sa.String(64)),
    sa.Column("method", sa.String(16)),
    sa.Column("route", sa.String(256)),
    sa.Column("model", sa.String(256)),
    sa.Column("node", sa.String(128)),
    sa.Column("status", sa.Integer),
    sa.Column("prompt_sha256", sa.String(64)),
    sa.Column("prompt_len", sa.Integer),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("ttft_s", sa.Float),
    sa.Column("latency_s", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("action", sa.String(64)),
    sa.Column("detail", sa.JSON),
)

# Run-time fleet changes (/admin/backends) shared by every replica and worker: one row per node with
# an override, and one counter that every change bumps, so that a poll costs one tiny read.
fleet_nodes = sa.Table(
    "fleet_nodes",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("settings", sa.JSON),
    sa.Column("removed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("draining", sa.Boolean),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("updated_by", sa.String(128)),
)

fleet_version = sa.Table(
    "fleet_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)


rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("nodes", sa.JSON, nullable=False),
    sa.Column("keep_alive", sa.String(32)),
    sa.Column("node_index", sa.Integer, nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", _ts, nullable=False),
)


def async_url(url: str) -> str:
    """`sqlite:///p` and `postgresql://...` as the async drivers want them; explicit drivers are kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    return driver.get(scheme, scheme) + "://" + rest


def open_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(async_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        # WAL and a busy timeout let the CLI write keys while a server reads them. SQLAlchemy, not the
        # driver, begins transactions, so that a migration can take the write lock up front (IMMEDIATE):
        # two deferred transactions that both read, then write, deadlock on SQLite.
        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_conn: Any, _record: object) -> None:
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")
            # Switching a new file to WAL needs a moment of exclusive access, and SQLite answers "locked"
            # at once (busy timeout or not) while another connection, e.g. a replica migrating at the
            # same time, holds the file: retry for a while.
            for attempt in range(100):
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    break
                except Exception as exc:
                    if "locked" not in str(exc) or attempt == 99:
                        raise
                    time.sleep(0.05)
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN " + str(conn.get_execution_options().get("sqlite_begin", "DEFERRED")))

    return engine


def _upgrade(conn: sa.Connection, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database to `revision`; safe to call from several replicas at once."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
        async with conn.begin():
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade, revision)
