"""Session-wide real servers for the contract suites; a suite skips only when the binaries are absent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from corral.adapters.migrations import open_engine

from .servers import Server, ServerUnavailable, start_postgres, start_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    try:
        cm = start_redis()
        server = cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    try:
        cm = start_postgres()
        server = cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def postgres_url(postgres_server: Server) -> str:
    """A fresh, empty database on the session's server."""
    name = "t_" + uuid.uuid4().hex[:12]

    async def create() -> None:
        engine = open_engine(postgres_server.url).execution_options(isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        await engine.dispose()

    asyncio.run(create())
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name
