"""One suite over every FleetStore: memory, SQLite (a temporary file) and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeVar

import pytest

from corral.adapters.fleetstore import FleetStore, MemoryFleetStore, SqlFleetStore
from corral.domain.fleet_state import NodeOverride

from .servers import run

T = TypeVar("T")
NOW = 1_700_000_000.0
SPEC = {"name": "gpu-9", "url": "http://10.0.0.9:11434", "type": "ollama"}


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return str(request.getfixturevalue("postgres_url"))


def open_store(url: str) -> FleetStore:
    return MemoryFleetStore() if url == "memory://" else SqlFleetStore(url)


def test_every_change_bumps_the_version_and_the_last_write_of_a_node_wins(url: str) -> None:
    async def body() -> None:
        store = open_store(url)
        try:
            await store.migrate()
            await store.migrate()  # idempotent
            assert await store.overrides() == (0, [])
            v1 = await store.put(NodeOverride("gpu-9", SPEC, False, False), NOW, "root")
            v2 = await store.set_draining("gpu-9", True, NOW + 1, "root")
            assert v2 > v1 and await store.version() == v2
            # Draining keeps the run-time node's settings.
            assert await store.overrides() == (v2, [NodeOverride("gpu-9", SPEC, False, True)])
            # Draining a YAML node (no row yet) stores the drain alone.
            await store.set_draining("yaml-1", True, NOW + 2)
            v4 = await store.put(NodeOverride("gpu-9", None, True, None), NOW + 3)
            version, rows = await store.overrides()
            assert version == v4
            assert sorted(rows, key=lambda o: o.name) == [
                NodeOverride("gpu-9", None, True, None),
                NodeOverride("yaml-1", None, False, True),
            ]
        finally:
            await store.close()

    run(body())


def test_two_processes_see_each_others_changes(url: str) -> None:
    if url == "memory://":
        pytest.skip("memory is one process's own")

    async def body() -> None:
        a, b = SqlFleetStore(url), SqlFleetStore(url)
        try:
            await asyncio.gather(a.migrate(), b.migrate())  # replicas starting together
            assert a.shared and b.shared
            before = await b.version()
            # Writers racing: each change gets its own version, none is lost.
            versions = await asyncio.gather(
                *(a.set_draining(f"n{i}", True, NOW) for i in range(5)),
                *(b.set_draining(f"n{i}", False, NOW) for i in range(5, 10)),
            )
            assert sorted(versions) == list(range(before + 1, before + 11))
            version, rows = await a.overrides()
            assert version == before + 10 and len(rows) == 10
        finally:
            await a.close()
            await b.close()

    run(body())
