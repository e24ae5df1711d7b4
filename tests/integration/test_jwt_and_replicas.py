"""JWTs through a running Corral, and keys shared by two replicas on one real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from procs import Proc, start_corral, start_sim, wait_for
from tests.contract.servers import ServerUnavailable, start_postgres

SECRET = "a-test-secret-of-at-least-32-bytes!!"


@pytest.fixture
def sim() -> Iterator[Proc]:
    proc = start_sim("llama3.2:1b", "qwen2.5:7b", extra=["--tokens-per-second", "2000", "--load-seconds", "0"])
    yield proc
    proc.stop()


def chat(corral: Proc, token: str, model: str = "llama3.2:1b") -> httpx.Response:
    return httpx.post(
        corral.url + "/api/chat",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False},
    )


def test_jwt_claims_map_to_role_and_models(tmp_path: Path, sim: Proc) -> None:
    corral = start_corral(
        {
            "backends": [{"name": "n", "url": sim.url}],
            "auth": {
                "enabled": True,
                "store_url": f"sqlite:///{tmp_path / 'keys.db'}",
                "jwt": {"secret": SECRET, "issuer": "https://idp.example"},
            },
        }
    )
    now = int(time.time())
    try:
        user = jwt.encode(
            {"sub": "svc-a", "iss": "https://idp.example", "exp": now + 300, "models": ["llama*"]}, SECRET
        )
        assert chat(corral, user).status_code == 200
        assert chat(corral, user, "qwen2.5:7b").status_code == 403
        admin = jwt.encode({"sub": "ops", "iss": "https://idp.example", "exp": now + 300, "role": "admin"}, SECRET)
        assert (
            httpx.get(corral.url + "/admin/backends", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        )
        for bad in (
            jwt.encode({"sub": "x", "iss": "https://idp.example", "exp": now - 600}, SECRET),  # expired
            jwt.encode({"sub": "x", "iss": "https://evil.example", "exp": now + 300}, SECRET),  # wrong issuer
            jwt.encode({"sub": "x", "iss": "https://idp.example", "exp": now + 300}, "x" * 40),  # wrong secret
            "a.b.c",
        ):
            reply = chat(corral, bad)
            assert reply.status_code == 401 and reply.json() == {"error": "unauthorized"}
    finally:
        corral.stop()


def test_keys_work_across_replicas_sharing_postgresql(tmp_path: Path, sim: Proc) -> None:
    try:
        pg_cm = start_postgres()
        pg = pg_cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    auth = {"enabled": True, "store_url": pg.url, "cache_ttl_s": 0.5}
    replicas = [start_corral({"backends": [{"name": "n", "url": sim.url}], "auth": auth}) for _ in range(2)]
    try:
        # Bootstrap an admin key through the CLI-equivalent admin path: the first key comes from the store.
        import asyncio

        from corral.adapters.keystore import KeySpec, SqlKeyStore
        from corral.domain.keys import Role

        async def bootstrap() -> str:
            store = SqlKeyStore(pg.url)
            try:
                await store.migrate()
                _, key = await store.create(KeySpec("root", Role.ADMIN), time.time())
                return key
            finally:
                await store.close()

        admin = asyncio.run(bootstrap())
        created = httpx.post(
            replicas[0].url + "/admin/keys", headers={"Authorization": f"Bearer {admin}"}, json={"name": "shared-app"}
        )
        assert created.status_code == 201
        key = created.json()["key"]
        assert chat(replicas[1], key).status_code == 200  # made on one replica, honoured by the other
        assert (
            httpx.delete(
                replicas[1].url + "/admin/keys/shared-app", headers={"Authorization": f"Bearer {admin}"}
            ).status_code
            == 200
        )
        wait_for(lambda: chat(replicas[0], key).status_code == 401, 5, "the revocation to reach the other replica")
    finally:
        for corral in replicas:
            corral.stop()
        pg_cm.__exit__(None, None, None)
