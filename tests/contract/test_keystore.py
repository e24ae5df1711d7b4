"""One suite over every KeyStore: SQLite (a temporary file) and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa

from corral.adapters.keystore import KeyCache, KeyExists, KeyNotFound, KeySpec, SqlKeyStore
from corral.domain.keys import Role, parse_key

from .servers import run

T = TypeVar("T")
NOW = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_create_lookup_list_and_the_plaintext_is_not_stored(url: str) -> None:
    async def body() -> None:
        store = SqlKeyStore(url)
        await store.migrate()
        await store.migrate()  # idempotent
        spec = KeySpec("team-a", Role.USER, ("llama3*",), rpm=60, tpm=10_000, max_concurrency=2, priority=1)
        record, plaintext = await store.create(spec, NOW)
        parsed = parse_key(plaintext)
        assert parsed is not None and parsed.prefix == record.prefix
        assert record.spec == spec and record.created_at == NOW and record.revoked_at is None
        found = await store.lookup(plaintext)
        assert found == record
        assert found.principal.allows_model("llama3.2") and not found.principal.allows_model("qwen2.5")
        assert await store.lookup(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
        assert await store.lookup("crl_" + parsed.prefix + "_" + "x" * 43) is None
        assert await store.lookup("nonsense") is None
        admin, _ = await store.create(KeySpec("ops", Role.ADMIN, expires_at=NOW + 60), NOW)
        assert [r.name for r in await store.list()] == ["ops", "team-a"]
        assert (await store.get("ops")) == admin and admin.principal.is_admin
        async with store.engine.connect() as conn:
            dump = str((await conn.execute(sa.text("SELECT * FROM api_keys"))).all())
        assert parsed.secret not in dump and plaintext not in dump
        await store.close()

    run(body())


def test_names_are_unique(url: str) -> None:
    async def body() -> None:
        store = SqlKeyStore(url)
        await store.migrate()
        await store.create(KeySpec("a"), NOW)
        with pytest.raises(KeyExists):
            await store.create(KeySpec("a", rpm=5), NOW)
        await store.revoke("a", NOW)
        with pytest.raises(KeyExists):
            await store.create(KeySpec("a"), NOW)
        await store.close()

    run(body())


def test_revoke_and_rotate(url: str) -> None:
    async def body() -> None:
        store = SqlKeyStore(url)
        await store.migrate()
        spec = KeySpec("svc", models=("qwen*",), rpm=10, tpm=100, max_concurrency=1, expires_at=NOW + 3600)
        _, old = await store.create(spec, NOW)
        rotated, new = await store.rotate("svc", NOW + 1)
        assert new != old and rotated.spec == spec and rotated.created_at == NOW
        assert await store.lookup(old) is None
        assert await store.lookup(new) == rotated
        revoked = await store.revoke("svc", NOW + 2)
        assert revoked.revoked_at == NOW + 2
        still = await store.lookup(new)
        assert still is not None and not still.active(NOW + 3)
        assert await store.list() == [] and [r.name for r in await store.list(include_revoked=True)] == ["svc"]
        with pytest.raises(KeyNotFound):
            await store.revoke("svc", NOW + 3)
        with pytest.raises(KeyNotFound):
            await store.rotate("svc", NOW + 3)
        with pytest.raises(KeyNotFound):
            await store.revoke("nobody", NOW)
        await store.close()

    run(body())


def test_revocation_reaches_another_replica_within_the_cache_ttl(url: str) -> None:
    async def body() -> None:
        admin, replica = SqlKeyStore(url), SqlKeyStore(url)
        await admin.migrate()
        _, key = await admin.create(KeySpec("k", expires_at=NOW + 100), NOW)
        cache = KeyCache(replica, ttl_s=2.0)
        principal = await cache.principal(key, NOW)
        assert principal is not None and principal.name == "k"
        await admin.revoke("k", NOW + 0.5)
        assert await cache.principal(key, NOW + 1.0) is not None  # still cached
        assert await cache.principal(key, NOW + 2.1) is None  # looked up again: revoked
        _, other = await admin.create(KeySpec("expiring", expires_at=NOW + 10), NOW)
        assert await cache.principal(other, NOW + 9) is not None
        assert await cache.principal(other, NOW + 10) is None  # expiry needs no new look-up
        assert await cache.principal("crl_bad", NOW) is None
        await admin.close()
        await replica.close()

    run(body())


def test_replicas_migrating_together(url: str) -> None:
    async def body() -> None:
        stores = [SqlKeyStore(url) for _ in range(4)]
        await asyncio.gather(*(s.migrate() for s in stores))
        _, key = await stores[0].create(KeySpec("x"), NOW)
        assert all([await s.lookup(key) is not None for s in stores])
        for s in stores:
            await s.close()

    run(body())


def test_keys_survive_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"

    async def first() -> str:
        store = SqlKeyStore(url)
        await store.migrate()
        _, key = await store.create(KeySpec("persist", rpm=3), NOW)
        await store.close()
        return key

    key = run(first())

    async def second() -> None:
        store = SqlKeyStore(url)
        await store.migrate()
        record = await store.lookup(key)
        assert record is not None and record.spec.rpm == 3
        await store.close()

    run(second())


def test_migrations_build_exactly_the_declared_schema(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from corral.adapters.migrations import metadata

    def diff(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async def body() -> None:
        store = SqlKeyStore(url)
        await store.migrate()
        async with store.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
        await store.close()

    run(body())


def test_a_keys_node_group_is_stored_and_reaches_its_principal(url: str) -> None:
    async def body() -> None:
        store = SqlKeyStore(url)
        await store.migrate()
        _, grouped = await store.create(KeySpec("search", nodes={"team": "search", "pool": "gpu"}), NOW)
        _, free = await store.create(KeySpec("free"), NOW)
        cache = KeyCache(store, ttl_s=0.0)
        principal = await cache.principal(grouped, NOW)
        assert principal is not None and principal.nodes == {"team": "search", "pool": "gpu"}
        unconfined = await cache.principal(free, NOW)
        assert unconfined is not None and unconfined.nodes is None
        assert {r.name: r.spec.nodes for r in await store.list()} == {
            "free": None,
            "search": {"team": "search", "pool": "gpu"},
        }
        await store.close()

    run(body())


def test_a_store_from_before_node_groups_gains_the_column(tmp_path: Path) -> None:
    from corral.adapters.migrations import upgrade

    async def body() -> None:
        store = SqlKeyStore(f"sqlite:///{tmp_path / 'k.db'}")
        await upgrade(store.engine, "0002")
        async with store.engine.connect() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("api_keys")})
        assert "nodes" not in columns
        await store.migrate()
        _, key = await store.create(KeySpec("k", nodes={"team": "a"}), NOW)
        principal = await KeyCache(store, ttl_s=0.0).principal(key, NOW)
        assert principal is not None and principal.nodes == {"team": "a"}
        await store.close()

    run(body())
