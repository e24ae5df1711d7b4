"""JWT verification: HS256 with a secret, RS256 and ES256 against a JWKS served by a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from corral.adapters.jwt_auth import ClaimMap, JwtVerifier, principal_from_claims
from corral.domain.errors import Unauthenticated
from corral.domain.keys import Role

T = TypeVar("T")
NOW = 1_700_000_000.0
SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Jwks:
    """A tiny identity provider's key endpoint: serves `keys` and counts fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, public_key: Any, kid: str, alg: str) -> None:
        algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
        jwk = algorithm.to_jwk(public_key, as_dict=True)
        self.keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.stop()


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(NOW) + 600, "iat": int(NOW), **extra}


def test_hs256_claims_become_a_principal() -> None:
    verifier = JwtVerifier(secret=SECRET, issuer="https://idp", audience="corral")
    token = jwt.encode(
        claims(iss="https://idp", aud="corral", role="admin", models=["llama3*"], rpm=30, tpm=9000, priority=2),
        SECRET,
    )
    p = run(verifier.verify(token, NOW))
    assert (p.name, p.prefix, p.role, p.models, p.rpm, p.tpm, p.priority) == (
        "alice", "jwt", Role.ADMIN, ("llama3*",), 30, 9000, 2,
    )  # fmt: skip
    assert p.expires_at == NOW + 600 and p.allows_model("llama3.2") and not p.allows_model("qwen2.5")
    for bad in [
        jwt.encode(claims(iss="https://idp", aud="corral"), "another-secret-another-secret-xx"),
        jwt.encode(claims(iss="https://other", aud="corral"), SECRET),
        jwt.encode(claims(iss="https://idp", aud="someone-else"), SECRET),
        jwt.encode({"sub": "alice", "iss": "https://idp", "aud": "corral"}, SECRET),  # no exp
        jwt.encode(claims(iss="https://idp", aud="corral"), "", algorithm="none"),
        "not.a.token",
    ]:
        with pytest.raises(Unauthenticated):
            run(verifier.verify(bad, NOW))


def test_expiry_and_not_before_use_the_given_time() -> None:
    verifier = JwtVerifier(secret=SECRET, leeway_s=10)
    token = jwt.encode(claims(nbf=int(NOW) + 100), SECRET)
    with pytest.raises(Unauthenticated, match="not valid yet"):
        run(verifier.verify(token, NOW + 89))
    assert run(verifier.verify(token, NOW + 91)).name == "alice"
    assert run(verifier.verify(token, NOW + 609)).name == "alice"  # within the leeway
    with pytest.raises(Unauthenticated, match="expired"):
        run(verifier.verify(token, NOW + 610))


def test_rs256_and_es256_against_a_jwks_with_key_rotation(jwks: Jwks) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks.add(rsa_key.public_key(), "rsa-1", "RS256")
    verifier = JwtVerifier(jwks_url=jwks.url, jwks_ttl_s=300, jwks_min_refresh_s=30)

    async def body() -> None:
        rs = jwt.encode(claims(role=["user"], models="qwen* llama3*"), rsa_key, "RS256", headers={"kid": "rsa-1"})
        p = await verifier.verify(rs, NOW)
        assert p.role is Role.USER and p.models == ("qwen*", "llama3*")
        assert jwks.fetches == 1
        await verifier.verify(rs, NOW + 10)
        assert jwks.fetches == 1  # cached
        # The provider adds an EC key: a token naming it makes the verifier fetch again, once.
        jwks.add(ec_key.public_key(), "ec-1", "ES256")
        es = jwt.encode(claims(sub="bob"), ec_key, "ES256", headers={"kid": "ec-1"})
        assert (await verifier.verify(es, NOW + 40)).name == "bob"
        assert jwks.fetches == 2
        ghost = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "ghost"})
        with pytest.raises(Unauthenticated, match="unknown key"):
            await verifier.verify(ghost, NOW + 41)
        assert jwks.fetches == 2  # an unknown kid refreshes at most every jwks_min_refresh_s
        await verifier.verify(es, NOW + 400)
        assert jwks.fetches == 3  # the TTL ran out
        # An HS256 token never reaches a JWKS verifier's keys (no algorithm confusion).
        with pytest.raises(Unauthenticated, match="algorithm"):
            await verifier.verify(jwt.encode(claims(), SECRET, "HS256", headers={"kid": "rsa-1"}), NOW + 401)
        # Signed by a key the provider never published.
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(Unauthenticated):
            await verifier.verify(jwt.encode(claims(), other, "RS256", headers={"kid": "rsa-1"}), NOW + 402)

    run(body())


def test_keys_in_hand_outlive_an_unreachable_provider(jwks: Jwks) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.add(key.public_key(), "k", "ES256")
    verifier = JwtVerifier(jwks_url=jwks.url, jwks_ttl_s=60)
    token = jwt.encode(claims(), key, "ES256", headers={"kid": "k"})
    assert run(verifier.verify(token, NOW)).name == "alice"
    jwks.stop()
    assert run(verifier.verify(token, NOW + 120)).name == "alice"
    cold = JwtVerifier(jwks_url=jwks.url)
    with pytest.raises(Unauthenticated, match="cannot fetch"):
        run(cold.verify(token, NOW))


def test_claim_mapping_with_nested_paths() -> None:
    m = ClaimMap(name="email", role="realm_access.roles", admin_values=("corral-admin",), models="corral.models")
    p = principal_from_claims(
        {"email": "ops@example.com", "realm_access": {"roles": ["x", "corral-admin"]}, "corral": {"models": ["*"]}}, m
    )
    assert p.is_admin and p.name == "ops@example.com" and p.models == ("*",) and p.rpm is None
    assert principal_from_claims({"sub": "u"}).models == ("*",)
    bad_claims: list[dict[str, Any]] = [{}, {"sub": ""}, {"sub": "u", "rpm": "many"}, {"sub": "u", "models": [1]}]
    for bad in bad_claims:
        with pytest.raises(Unauthenticated):
            principal_from_claims(bad)
