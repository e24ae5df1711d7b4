"""Bearer JWTs as an alternative to API keys: HS256 with a shared secret, or RS256/ES256 checked against
an identity provider's JWKS. Claims map to a Principal. Time is an argument (PyJWT's own clock checks are
off), and the JWKS is fetched off the event loop and cached: refreshed after `jwks_ttl_s`, or early when
a token names an unknown key id (a key rotation), but not more often than `jwks_min_refresh_s`."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from corral.domain.errors import Unauthenticated
from corral.domain.groups import parse_selector
from corral.domain.keys import Principal, Role

JwksFetch = Callable[[str], Awaitable[dict[str, Any]]]
ASYMMETRIC = ("RS256", "ES256")


async def fetch_json(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            data = json.loads(response.read())
        if not isinstance(data, dict):
            raise ValueError("a JWKS is a JSON object")
        return data

    return await asyncio.to_thread(get)


@dataclass(frozen=True, slots=True)
class ClaimMap:
    """Which claims (dotted paths into nested objects) hold what. A role claim may be a string or a list;
    a models claim a list or a space-separated string."""

    name: str = "sub"
    role: str = "role"
    admin_values: tuple[str, ...] = ("admin",)
    models: str = "models"
    rpm: str = "rpm"
    tpm: str = "tpm"
    max_concurrency: str = "max_concurrency"
    priority: str = "priority"
    nodes: str = "nodes"
    default_models: tuple[str, ...] = ("*",)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _int(claims: Mapping[str, Any], path: str) -> int | None:
    value = _claim(claims, path)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Unauthenticated(f"claim {path!r} is not a number")
    try:
        return int(value)
    except ValueError as exc:
        raise Unauthenticated(f"claim {path!r} is not a number") from exc


def principal_from_claims(claims: Mapping[str, Any], m: ClaimMap = ClaimMap()) -> Principal:
    name = _claim(claims, m.name)
    if not isinstance(name, str) or not name:
        raise Unauthenticated(f"token has no {m.name!r} claim")
    role_claim = _claim(claims, m.role)
    roles = [role_claim] if isinstance(role_claim, str) else role_claim if isinstance(role_claim, list) else []
    admin = any(r in m.admin_values for r in roles)
    models_claim = _claim(claims, m.models)
    if isinstance(models_claim, str):
        models = tuple(models_claim.split())
    elif isinstance(models_claim, list) and all(isinstance(x, str) for x in models_claim):
        models = tuple(models_claim)
    elif models_claim is None:
        models = m.default_models
    else:
        raise Unauthenticated(f"claim {m.models!r} is not a list of model names")
    exp = claims.get("exp")
    nodes_claim = _claim(claims, m.nodes)
    try:
        if isinstance(nodes_claim, dict) and all(isinstance(v, str) for v in nodes_claim.values()):
            nodes = parse_selector(",".join(f"{k}={v}" for k, v in nodes_claim.items())) or None
        elif isinstance(nodes_claim, str):
            nodes = parse_selector(nodes_claim) or None
        elif nodes_claim is None:
            nodes = None
        else:
            raise ValueError("not a label selector")
    except ValueError as exc:
        # A token meant to confine its holder to a node group must not pass as unconfined.
        raise Unauthenticated(f"claim {m.nodes!r}: {exc}") from None
    return Principal(
        name=name,
        prefix="jwt",
        role=Role.ADMIN if admin else Role.USER,
        models=models,
        rpm=_int(claims, m.rpm),
        tpm=_int(claims, m.tpm),
        max_concurrency=_int(claims, m.max_concurrency),
        priority=_int(claims, m.priority) or 0,
        expires_at=float(exp) if isinstance(exp, int | float) else None,
        source="jwt",
        nodes=nodes,
    )


class JwtVerifier:
    """`JwtVerifier(secret="...")` for HS256, or `JwtVerifier(jwks_url="https://idp/.well-known/jwks.json")`."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30.0,
        require_exp: bool = True,
        claims: ClaimMap = ClaimMap(),
        jwks_ttl_s: float = 300.0,
        jwks_min_refresh_s: float = 30.0,
        fetch: JwksFetch = fetch_json,
    ) -> None:
        if (secret is None) == (jwks_url is None):
            raise ValueError("give either a secret (HS256) or a JWKS URL (RS256/ES256)")
        self.secret, self.jwks_url = secret, jwks_url
        self.algorithms = ("HS256",) if secret is not None else ASYMMETRIC
        self.issuer, self.audience, self.leeway_s, self.require_exp = issuer, audience, leeway_s, require_exp
        self.claims, self._fetch = claims, fetch
        self.jwks_ttl_s, self.jwks_min_refresh_s = jwks_ttl_s, jwks_min_refresh_s
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def _refresh(self, now: float) -> None:
        assert self.jwks_url is not None
        try:
            data = await self._fetch(self.jwks_url)
            keyset = jwt.PyJWKSet.from_dict(data)
        except Exception as exc:  # network, JSON or key errors: keep what we had
            self._fetched_at = now
            if not self._keys:
                raise Unauthenticated("cannot fetch the identity provider's keys") from exc
            return
        self._keys = {k.key_id: k for k in keyset.keys if k.public_key_use in (None, "sig")}
        self._fetched_at = now

    async def _key(self, kid: str | None, now: float) -> jwt.PyJWK:
        async with self._lock:
            age = None if self._fetched_at is None else now - self._fetched_at
            stale = age is None or age >= self.jwks_ttl_s
            unknown = kid not in self._keys and (age is None or age >= self.jwks_min_refresh_s)
            if stale or unknown:
                await self._refresh(now)
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise Unauthenticated("token signed with an unknown key")
        return key

    async def verify(self, token: str, now: float) -> Principal:
        """The principal a valid token stands for; `Unauthenticated` for anything else."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed token") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
        key: str | jwt.PyJWK = self.secret if self.secret is not None else await self._key(header.get("kid"), now)
        options: jwt.types.Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
        if self.require_exp:
            options["require"] = ["exp"]
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer, options=options
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if exp is not None and (not isinstance(exp, int | float) or now >= exp + self.leeway_s):
            raise Unauthenticated("token expired")
        if nbf is not None and (not isinstance(nbf, int | float) or now < nbf - self.leeway_s):
            raise Unauthenticated("token not valid yet")
        return principal_from_claims(claims, self.claims)
