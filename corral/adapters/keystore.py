"""API keys in a SQL database (SQLite by default, PostgreSQL for several replicas), and a short-lived
look-up cache in front of it so that a revocation reaches every replica within its TTL."""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.adapters.migrations import api_keys, open_engine, upgrade
from corral.domain.errors import GatewayError
from corral.domain.keys import Principal, RandomSource, Role, generate_key, hash_key, parse_key, verify


class KeyExists(ValueError):
    """A key of that name exists already (revoked or not): names are never reused."""


class KeyNotFound(LookupError):
    """No live key of that name."""


class KeyStoreUnavailable(GatewayError):
    """The key database cannot be reached and the key is not in the cache: 503, not a 500."""

    status = 503


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What an administrator chooses for a key; None in a limit means no limit."""

    name: str
    role: Role = Role.USER
    models: tuple[str, ...] = ("*",)
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    priority: int = 0
    expires_at: float | None = None
    nodes: Mapping[str, str] | None = None  # node-group selector; None: every node


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key as listings show it: never the secret, never the hash."""

    spec: KeySpec
    prefix: str
    created_at: float
    revoked_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def active(self, now: float) -> bool:
        # Principal.is_expired's rule, without building a principal (this runs on every request)
        expires_at = self.spec.expires_at
        return self.revoked_at is None and not (expires_at is not None and now >= expires_at)

    @property
    def principal(self) -> Principal:
        s = self.spec
        return Principal(
            s.name,
            self.prefix,
            s.role,
            s.models,
            s.rpm,
            s.tpm,
            s.max_concurrency,
            s.priority,
            s.expires_at,
            nodes=s.nodes,
        )


class KeyStore(Protocol):
    async def migrate(self) -> None: ...
    async def create(self, spec: KeySpec, now: float) -> tuple[KeyRecord, str]: ...
    async def list(self, include_revoked: bool = False) -> list[KeyRecord]: ...
    async def get(self, name: str) -> KeyRecord | None: ...
    async def revoke(self, name: str, now: float) -> KeyRecord: ...
    async def rotate(self, name: str, now: float) -> tuple[KeyRecord, str]: ...
    async def lookup(self, presented: str) -> KeyRecord | None: ...
    async def close(self) -> None: ...


def _dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _record(row: sa.Row[Any]) -> KeyRecord:
    m = row._mapping
    spec = KeySpec(
        m["name"], Role(m["role"]), tuple(m["models"]), m["rpm"], m["tpm"], m["max_concurrency"], m["priority"],
        _epoch(m["expires_at"]), m["nodes"] or None,
    )  # fmt: skip
    created = _epoch(m["created_at"])
    assert created is not None
    return KeyRecord(spec, m["prefix"], created, _epoch(m["revoked_at"]))


def record_json(record: KeyRecord) -> dict[str, Any]:
    """A record as plain JSON, for the workers of one replica to share what they know (app/serve.py)."""
    spec = record.spec
    return {
        "spec": {
            "name": spec.name, "role": spec.role.value, "models": list(spec.models), "rpm": spec.rpm,
            "tpm": spec.tpm, "max_concurrency": spec.max_concurrency, "priority": spec.priority,
            "expires_at": spec.expires_at, "nodes": dict(spec.nodes) if spec.nodes is not None else None,
        },
        "prefix": record.prefix, "created_at": record.created_at, "revoked_at": record.revoked_at,
    }  # fmt: skip


def record_from_json(doc: dict[str, Any]) -> KeyRecord:
    s = doc["spec"]
    spec = KeySpec(
        s["name"], Role(s["role"]), tuple(s["models"]), s["rpm"], s["tpm"], s["max_concurrency"], s["priority"],
        s["expires_at"], s["nodes"],
    )  # fmt: skip
    return KeyRecord(spec, doc["prefix"], doc["created_at"], doc["revoked_at"])


class SqlKeyStore:
    """`SqlKeyStore("sqlite:///keys.db")`, `SqlKeyStore("postgresql://...")`, or over a shared engine."""

    _ATTEMPTS = 5  # fresh prefixes to try if one collides (1 in 36**8 each)

    def __init__(self, url_or_engine: str | AsyncEngine, rng: RandomSource = secrets) -> None:
        self._owns_engine = isinstance(url_or_engine, str)
        self.engine = open_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self._rng = rng

    async def migrate(self) -> None:
        await upgrade(self.engine)

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()

    async def create(self, spec: KeySpec, now: float) -> tuple[KeyRecord, str]:
        values = {
            "name": spec.name, "role": spec.role.value, "models": list(spec.models), "rpm": spec.rpm, "tpm": spec.tpm,
            "max_concurrency": spec.max_concurrency, "priority": spec.priority, "expires_at": _dt(spec.expires_at),
            "created_at": _dt(now), "nodes": dict(spec.nodes) if spec.nodes else None,
        }  # fmt: skip
        for _ in range(self._ATTEMPTS):
            key = generate_key(self._rng)
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(api_keys.insert().values(prefix=key.prefix, hash=key.hash, **values))
            except IntegrityError as exc:
                if await self.get(spec.name) is not None:
                    raise KeyExists(spec.name) from exc
                continue
            return KeyRecord(spec, key.prefix, now), key.plaintext
        raise RuntimeError("could not find a free key prefix")

    async def list(self, include_revoked: bool = False) -> list[KeyRecord]:
        query = api_keys.select().order_by(api_keys.c.name)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def get(self, name: str) -> KeyRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(api_keys.select().where(api_keys.c.name == name))).first()
        return None if row is None else _record(row)

    async def revoke(self, name: str, now: float) -> KeyRecord:
        live = sa.and_(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        async with self.engine.begin() as conn:
            done = await conn.execute(api_keys.update().where(live).values(revoked_at=_dt(now)))
        if done.rowcount != 1:
            raise KeyNotFound(name)
        record = await self.get(name)
        assert record is not None
        return record

    async def rotate(self, name: str, now: float) -> tuple[KeyRecord, str]:
        """A new secret (and prefix) for a live key, keeping its name and limits; the old key stops at once."""
        live = sa.and_(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        for _ in range(self._ATTEMPTS):
            key = generate_key(self._rng)
            try:
                async with self.engine.begin() as conn:
                    done = await conn.execute(api_keys.update().where(live).values(prefix=key.prefix, hash=key.hash))
            except IntegrityError:
                continue
            if done.rowcount != 1:
                raise KeyNotFound(name)
            record = await self.get(name)
            assert record is not None
            return record, key.plaintext
        raise RuntimeError("could not find a free key prefix")

    async def lookup(self, presented: str) -> KeyRecord | None:
        """The record behind a presented key (revoked and expired ones included: the caller decides)."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        query = sa.select(api_keys).where(api_keys.c.prefix == parsed.prefix)
        try:
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        except (SQLAlchemyError, OSError) as exc:
            raise KeyStoreUnavailable("the key database cannot be reached; try again shortly") from exc
        if row is None or not verify(presented, row._mapping["hash"]):
            return None
        return _record(row)


class Miss:
    """KeyCache.cached's answer when the cache cannot say: the key store must be asked."""


MISS = Miss()


class KeyCache:
    """Look-ups through a small cache: a result (found or not) is reused for `ttl_s`, so a revocation or
    rotation on any replica takes effect everywhere within that time. Time is an argument."""

    def __init__(self, store: KeyStore, ttl_s: float = 2.0, max_entries: int = 10_000) -> None:
        self.store, self.ttl_s, self.max_entries = store, ttl_s, max_entries
        self._entries: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._principals: dict[str, tuple[KeyRecord, Principal]] = {}  # by digest: the record it came from
        # With workers: what a sibling knows of a key (by digest), asked while the database is down.
        self.elsewhere: Callable[[str], Awaitable[tuple[bool, KeyRecord | None]]] | None = None

    def known(self, digest: str) -> tuple[bool, KeyRecord | None]:
        """Whether this cache holds an answer for the key with this digest, and that answer."""
        hit = self._entries.get(digest)
        return (False, None) if hit is None else (True, hit[1])

    def cached(self, presented: str, now: float) -> Principal | Miss | None:
        """`principal()` without awaiting when the answer is cached (nearly every request): the
        principal, None for a key known to be unusable, or MISS when the store must be asked."""
        if parse_key(presented) is None:
            return None
        digest = hash_key(presented)  # the cache never holds a key in the clear
        hit = self._entries.get(digest)
        if hit is None or now - hit[0] >= self.ttl_s:
            return MISS
        return self._principal(digest, hit[1], now)

    async def principal(self, presented: str, now: float) -> Principal | None:
        """The principal of a live key, or None for an unknown, malformed, revoked or expired key."""
        found = self.cached(presented, now)
        if not isinstance(found, Miss):
            return found
        digest = hash_key(presented)
        pending = self._inflight.get(digest)
        if pending is None:
            # One look-up per key at a time: when an entry expires under load, the concurrent
            # requests share it instead of each opening a database connection.
            pending = asyncio.ensure_future(self._fetch(presented, digest, now))
            self._inflight[digest] = pending
        return self._principal(digest, await asyncio.shield(pending), now)

    def _principal(self, digest: str, record: KeyRecord | None, now: float) -> Principal | None:
        if record is None or not record.active(now):
            return None
        # One principal per fetched record, not one per request (a frozen dataclass of eleven fields).
        made = self._principals.get(digest)
        if made is None or made[0] is not record:
            if len(self._principals) >= self.max_entries:
                self._principals.clear()
            made = self._principals[digest] = (record, record.principal)
        return made[1]

    async def _fetch(self, presented: str, digest: str, now: float) -> KeyRecord | None:
        try:
            record = await self.store.lookup(presented)
        except KeyStoreUnavailable:
            # While the database is down, a key this replica knew keeps its last known answer (nobody
            # can revoke it meanwhile: revoking writes to that database); the store is asked again
            # after another TTL. A key never seen is refused with 503.
            # With workers, a sibling's answer counts: the replica knew the key.
            stale = self._entries.get(digest)
            if stale is None and self.elsewhere is not None:
                found, record = await self.elsewhere(digest)
                stale = (now, record) if found else None
            if stale is None:
                raise
            self._entries[digest] = (now, stale[1])
            return stale[1]
        finally:
            self._inflight.pop(digest, None)
        self._entries[digest] = (now, record)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return record

    def forget(self, names: Sequence[str] = ()) -> None:
        """Drop cached results (all, or those of the named keys) after a local admin change."""
        if not names:
            self._entries.clear()
            return
        for digest, (_, record) in list(self._entries.items()):
            if record is not None and record.name in names:
                del self._entries[digest]
