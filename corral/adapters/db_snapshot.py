"""Consistent copies of the project's database for `corral backup`, and their restore.

Every table the migrations create is copied, found by reflection rather than by a list, so a table a
later migration adds (fleet state, rollouts) is in the next backup with no change here. SQLite is
copied with its online backup API (a consistent file while a server writes); PostgreSQL as the rows of
each table, in JSON lines, read inside one REPEATABLE READ transaction so the tables agree. A restore
reads either form and replaces the rows of each table in the target database, which may be of the other
kind (a SQLite backup restores into PostgreSQL).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.adapters.migrations import open_engine, upgrade

SNAPSHOT_FILE = "database.sqlite"
TABLES_DIR = "tables"
_SKIP = frozenset({"alembic_version"})  # the schema's version, rebuilt by the migrations on restore

Rows = list[dict[str, Any]]


class SnapshotError(Exception):
    """The database cannot be copied or restored; the message says why."""


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL (any driver), None for any other database."""
    scheme, _, rest = url.partition("://")
    if scheme.split("+")[0] != "sqlite":
        return None
    return Path(rest[1:] if rest.startswith("/") else rest)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot store a {type(value).__name__} in a backup")


def _user_tables(conn: sa.Connection) -> list[sa.Table]:
    metadata = sa.MetaData()
    metadata.reflect(conn)
    return [t for t in metadata.sorted_tables if t.name not in _SKIP]


def _ordered(table: sa.Table) -> sa.Select[Any]:
    keys = list(table.primary_key.columns) or list(table.columns)
    return sa.select(table).order_by(*keys)


def _revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    value = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def _dump(conn: sa.Connection, folder: Path) -> tuple[dict[str, int], str | None]:
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for table in _user_tables(conn):
        count = 0
        with (folder / f"{table.name}.jsonl").open("w", encoding="utf-8") as out:
            for row in conn.execute(_ordered(table)):
                out.write(json.dumps(dict(row._mapping), default=_encode, sort_keys=True) + "\n")
                count += 1
        counts[table.name] = count
    return counts, _revision(conn)


def _sqlite_copy(source: Path, dest: Path) -> tuple[dict[str, int], str | None]:
    if not source.is_file():
        raise SnapshotError(f"the database file {source} does not exist (auth.store_url)")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(dest)
    try:
        src.backup(dst)  # a consistent copy even while a server writes (WAL)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        src.close()
        dst.close()
    engine = sa.create_engine(f"sqlite:///{dest}")
    try:
        with engine.connect() as conn:
            return _count(conn), _revision(conn)
    finally:
        engine.dispose()


async def snapshot(url: str, folder: Path) -> tuple[str, dict[str, int], str | None]:
    """Copy the database at `url` into `folder`: (the file or folder written, rows per table, schema revision)."""
    path = sqlite_path(url)
    if path is not None:
        counts, revision = await asyncio.to_thread(_sqlite_copy, path, folder / SNAPSHOT_FILE)
        return SNAPSHOT_FILE, counts, revision
    engine = open_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                counts, revision = await conn.run_sync(_dump, folder / TABLES_DIR)
    finally:
        await engine.dispose()
    return TABLES_DIR, counts, revision


def _sqlite_rows(path: Path) -> dict[str, Rows]:
    # Raw values, as JSON lines hold them (dates as text), so both forms go through the same conversion
    # against the target's column types; only JSON columns are decoded here, by their declared type.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out: dict[str, Rows] = {}
        for name in names:
            if name in _SKIP or name.startswith("sqlite_"):
                continue
            info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
            columns = [c[1] for c in info]
            json_columns = {c[1] for c in info if str(c[2]).upper() == "JSON"}
            keys = [c[1] for c in sorted(info, key=lambda c: c[5]) if c[5]] or columns
            order = ", ".join(f'"{k}"' for k in keys)
            rows = []
            for values in conn.execute(f'SELECT * FROM "{name}" ORDER BY {order}'):
                row = dict(zip(columns, values, strict=True))
                for column in json_columns & row.keys():
                    if isinstance(row[column], str):
                        row[column] = json.loads(row[column])
                rows.append(row)
            out[name] = rows
        return out
    finally:
        conn.close()


def read_snapshot(folder: Path, written: str) -> dict[str, Rows]:
    """The rows of a backup's database copy (dates as text: `restore` converts them by the target's types)."""
    if written == SNAPSHOT_FILE:
        return _sqlite_rows(folder / SNAPSHOT_FILE)
    out: dict[str, Rows] = {}
    for path in sorted((folder / written).glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            out[path.stem] = [json.loads(line) for line in lines if line.strip()]
    return out


def _coerce(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        column = table.columns.get(name)
        if column is None:
            continue  # a column the target's schema no longer has
        kind = column.type
        if isinstance(kind, sa.DateTime) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(kind, sa.DateTime) and isinstance(value, datetime) and kind.timezone and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # SQLite keeps no zone; the project writes UTC
        if isinstance(kind, sa.Boolean) and isinstance(value, int):
            value = bool(value)  # SQLite keeps 0 and 1
        if isinstance(kind, sa.LargeBinary) and isinstance(value, str):
            value = base64.b64decode(value)
        out[name] = value
    return out


def _replace(conn: sa.Connection, data: dict[str, Rows]) -> list[str]:
    tables = {t.name: t for t in _user_tables(conn)}
    unknown = sorted(set(data) - set(tables))
    chosen = [t for t in tables.values() if t.name in data]
    for table in reversed(chosen):  # children before parents
        conn.execute(table.delete())
    for table in chosen:
        rows = [_coerce(table, row) for row in data[table.name]]
        if rows:
            conn.execute(table.insert(), rows)
    if conn.dialect.name == "postgresql":
        for table in chosen:
            for column in _serial_columns(table):
                # Inserted ids do not move the sequence: without this the next insert collides.
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence(:t, :c), COALESCE(MAX({column}), 0) + 1, false) "
                        f'FROM "{table.name}"'
                    ),
                    {"t": table.name, "c": column},
                )
    return unknown


def _serial_columns(table: sa.Table) -> Iterator[str]:
    for column in table.primary_key.columns:
        if isinstance(column.type, sa.Integer):
            yield column.name


async def restore(url: str, data: dict[str, Rows]) -> list[str]:
    """Bring the database at `url` to the schema's head and replace the rows of each table in `data`, in one
    transaction. Returns the tables of the backup the target's schema does not have (not restored)."""
    engine = open_engine(url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            return await conn.run_sync(_replace, data)
    finally:
        await engine.dispose()


def _count(conn: sa.Connection) -> dict[str, int]:
    return {
        t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()) for t in _user_tables(conn)
    }


async def row_counts(url: str) -> dict[str, int] | None:
    """Rows per table in the database at `url`; None when a SQLite file does not exist yet."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        return None
    engine: AsyncEngine = open_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_count)
    finally:
        await engine.dispose()
