"""API-key authentication and scopes: a guard in the pipeline, and the `/admin/keys` routes.

Keys come as `Authorization: Bearer <key>` or `X-API-Key: <key>`. The guard runs on the matched route
(never on the raw path), so `//admin`, `/api/../admin` or encoded slashes cannot reach a route
without its check. `/health` and `/ready` need no key; `/metrics` is configurable.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson

from corral.adapters.jwt_auth import JwtVerifier
from corral.adapters.keystore import KeyCache, KeyExists, KeyNotFound, KeySpec, Miss, SqlKeyStore
from corral.app.routes import Access, RouteSpec
from corral.app.views import send_json
from corral.domain.errors import Forbidden, InvalidRequest, NotFound, Unauthenticated
from corral.domain.groups import parse_selector
from corral.domain.keys import Principal, Role
from corral.domain.record import RequestRecord
from corral.net.response import Request, Response


def presented_key(request: Request) -> str | None:
    header = request.header(b"authorization")
    if header is not None:
        scheme, _, value = header.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    api_key = request.header(b"x-api-key")
    return api_key.decode("latin-1").strip() if api_key else None


class AuthGuard:
    def __init__(
        self,
        cache: KeyCache,
        metrics_open: bool,
        on_reject: Callable[[str], None] | None = None,
        jwt: JwtVerifier | None = None,
    ) -> None:
        self.jwt = jwt
        self.cache = cache
        self.metrics_open = metrics_open
        self.on_reject = on_reject

    def _reject(self, reason: str, error: Exception) -> Exception:
        if self.on_reject is not None:
            self.on_reject(reason)
        return error

    def __call__(self, request: Request, record: RequestRecord, spec: RouteSpec) -> Awaitable[None] | None:
        """Synchronous when the key's answer is cached (no coroutine on the request's path); else the
        look-up to await."""
        access = spec.access
        if access is Access.PUBLIC or (access is Access.METRICS and self.metrics_open):
            return None
        key = presented_key(request)
        if key is None:
            raise self._reject("unauthenticated", Unauthenticated("unauthorized"))
        if self.jwt is not None and key.count(".") == 2 and not key.startswith("crl_"):
            return self._verify_jwt(key, record, spec)
        principal = self.cache.cached(key, time.time())
        if isinstance(principal, Miss):
            return self._look_up(key, record, spec)
        self._admit(principal, record, spec)
        return None

    async def _verify_jwt(self, key: str, record: RequestRecord, spec: RouteSpec) -> None:
        assert self.jwt is not None
        try:
            principal = await self.jwt.verify(key, time.time())
        except Unauthenticated:
            principal = None
        self._admit(principal, record, spec)

    async def _look_up(self, key: str, record: RequestRecord, spec: RouteSpec) -> None:
        self._admit(await self.cache.principal(key, time.time()), record, spec)

    def _admit(self, principal: Principal | None, record: RequestRecord, spec: RouteSpec) -> None:
        if principal is None:
            raise self._reject("unauthenticated", Unauthenticated("unauthorized"))
        record.principal = principal
        record.key_name = principal.name
        record.priority = principal.priority
        if spec.access is Access.ADMIN and not principal.is_admin:
            raise self._reject("forbidden", Forbidden(f"key '{principal.name}' may not call {spec.path}"))


def _expiry(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        from datetime import datetime

        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidRequest(f"expires: {value!r} is not an ISO date", param="expires") from exc
        if moment.tzinfo is None:
            moment = moment.astimezone()
        return moment.timestamp()
    raise InvalidRequest("expires: give an ISO date or epoch seconds", param="expires")


def spec_from(doc: object) -> KeySpec:
    """A KeySpec from an admin request body, with every field checked."""
    if not isinstance(doc, dict):
        raise InvalidRequest("request body must be a JSON object")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise InvalidRequest("name: a non-empty string of at most 64 characters is required", param="name")
    role = doc.get("role", "user")
    if role not in ("user", "admin"):
        raise InvalidRequest("role: must be 'user' or 'admin'", param="role")
    models = doc.get("models", ["*"])
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise InvalidRequest("models: a list of model names or globs", param="models")
    limits: dict[str, int | None] = {}
    for field in ("rpm", "tpm", "max_concurrency", "priority"):
        value = doc.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise InvalidRequest(f"{field}: must be a non-negative integer", param=field)
        limits[field] = value
    nodes = _selector(doc.get("nodes"))
    unknown = set(doc) - {"name", "role", "models", "rpm", "tpm", "max_concurrency", "priority", "expires", "nodes"}
    if unknown:
        raise InvalidRequest(f"{sorted(unknown)[0]}: unknown field", param=sorted(unknown)[0])
    return KeySpec(
        name=name.strip(),
        role=Role(role),
        models=tuple(models),
        rpm=limits["rpm"],
        tpm=limits["tpm"],
        max_concurrency=limits["max_concurrency"],
        priority=limits["priority"] or 0,
        expires_at=_expiry(doc.get("expires")),
        nodes=nodes,
    )


def _selector(value: object) -> dict[str, str] | None:
    """A key's node group: `team=search,pool=gpu` or {"team": "search"}; None or empty: every node."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return parse_selector(value) or None
        if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return parse_selector(",".join(f"{k}={v}" for k, v in value.items())) or None
    except ValueError as exc:
        raise InvalidRequest(f"nodes: {exc}", param="nodes") from None
    raise InvalidRequest('nodes: a label selector, team=search or {"team": "search"}', param="nodes")


def key_view(record: object, plaintext: str | None = None) -> dict[str, object]:
    from corral.adapters.keystore import KeyRecord

    assert isinstance(record, KeyRecord)
    s = record.spec
    out: dict[str, object] = {
        "name": s.name, "prefix": record.prefix, "role": s.role.value, "models": list(s.models), "rpm": s.rpm,
        "tpm": s.tpm, "max_concurrency": s.max_concurrency, "priority": s.priority, "expires_at": s.expires_at,
        "created_at": record.created_at, "revoked_at": record.revoked_at,
        "nodes": dict(s.nodes) if s.nodes else None,
    }  # fmt: skip
    if plaintext is not None:
        out["key"] = plaintext
    return out


class AdminKeys:
    """`/admin/keys`: list, create, revoke, rotate (admin keys only, via the guard)."""

    def __init__(self, store: SqlKeyStore, cache: KeyCache, audit: Callable[[str, dict[str, object]], None]) -> None:
        self.store = store
        self.cache = cache
        self.audit = audit

    async def list(self, request: Request, response: Response, record: RequestRecord) -> None:
        send_json(response, record, {"keys": [key_view(k) for k in await self.store.list(include_revoked=True)]})

    async def create(self, request: Request, response: Response, record: RequestRecord) -> None:
        try:
            doc = orjson.loads(request.body or b"null")
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"invalid JSON in request body: {exc.args[0]}") from exc
        spec = spec_from(doc)
        try:
            created, plaintext = await self.store.create(spec, time.time())
        except KeyExists:
            raise InvalidRequest(f"name: a key named '{spec.name}' exists", param="name") from None
        self.audit("key_created", {"name": spec.name, "prefix": created.prefix, "by": record.key_name})
        send_json(response, record, key_view(created, plaintext), 201)

    async def by_name(self, request: Request, response: Response, record: RequestRecord) -> None:
        name, _, action = record.path[len("/admin/keys/") :].partition("/")
        try:
            if request.method == "DELETE" and not action:
                changed = await self.store.revoke(name, time.time())
                self.cache.forget([name])
                self.audit("key_revoked", {"name": name, "by": record.key_name})
                send_json(response, record, key_view(changed))
            elif request.method == "POST" and action == "rotate":
                changed, plaintext = await self.store.rotate(name, time.time())
                self.cache.forget([name])
                self.audit("key_rotated", {"name": name, "prefix": changed.prefix, "by": record.key_name})
                send_json(response, record, key_view(changed, plaintext))
            else:
                raise NotFound(f"no admin action {request.method} /admin/keys/{name}/{action}".rstrip("/"))
        except KeyNotFound:
            raise NotFound(f"no key named '{name}'") from None
