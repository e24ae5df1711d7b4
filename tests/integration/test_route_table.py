"""The route table is the one place route facts live: walk it and check every route and method against
what the guards of a running Corral actually do, so a route added to the table cannot be half-wired."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from corral.app.routes import ROUTES, Access, RouteSpec
from procs import Proc, new_key, start_corral, start_sim

BODY = b'{"model": "m:1b", "prompt": "x", "stream": false, "options": {"num_predict": 1}}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str, str]]:
    tmp = tmp_path_factory.mktemp("routes")
    sim = start_sim("m:1b", extra=["--tokens-per-second", "2000", "--load-seconds", "0"])
    config = {
        "backends": [{"name": "n", "url": sim.url}],
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}", "metrics": "key"},
        "limits": {"per_ip_rpm": 100000},
    }
    corral = start_corral(config)
    path = corral.config_path  # type: ignore[attr-defined]
    admin = new_key(path, "--name", "admin", "--role", "admin")
    user = new_key(path, "--name", "user", "--tpm", "1")
    # A first request is admitted on an empty budget and charged; after it the key has no tokens left.
    first = httpx.post(corral.url + "/api/generate", content=BODY, headers={"Authorization": f"Bearer {user}"})
    assert first.status_code == 200, first.text
    try:
        yield corral, admin, user
    finally:
        corral.stop()
        sim.stop()


def calls() -> list[tuple[RouteSpec, str]]:
    return [(spec, method) for spec in ROUTES for method in spec.methods]


def call(corral: Proc, spec: RouteSpec, method: str, key: str | None) -> httpx.Response:
    path = spec.path.replace("{digest}", "sha256-00").replace("{model}", "nope").replace("{name}", "nope")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = BODY if method in ("POST", "DELETE") else None
    return httpx.request(method, corral.url + path, headers=headers, content=content, timeout=30)


@pytest.mark.parametrize(("spec", "method"), calls(), ids=[f"{m} {s.path}" for s, m in calls()])
def test_each_route_is_guarded_as_the_table_says(served: tuple[Proc, str, str], spec: RouteSpec, method: str) -> None:
    corral, admin, user = served
    anonymous = call(corral, spec, method, None)
    needs_key = spec.access is not Access.PUBLIC  # /metrics needs one too: auth.metrics is "key" here
    assert (anonymous.status_code == 401) is needs_key, anonymous.text

    as_user = call(corral, spec, method, user)
    if spec.access is Access.ADMIN:
        assert as_user.status_code == 403, as_user.text
    elif spec.tokens:
        # The user key allows 1 token a minute: a token-limited route refuses it before the handler.
        assert as_user.status_code == 429 and "token rate limit" in as_user.text, as_user.text
    else:
        assert as_user.status_code not in (401, 403, 429), as_user.text

    as_admin = call(corral, spec, method, admin)
    assert as_admin.status_code not in (401, 403, 429, 500), as_admin.text
    assert ("ratelimit-limit" in as_admin.headers) is spec.limited, dict(as_admin.headers)


def test_every_route_has_a_handler_in_the_assembly(served: tuple[Proc, str, str]) -> None:
    """No route of the table answers 404 'page not found' (a handler name that build.py does not bind)."""
    corral, admin, _ = served
    for spec, method in calls():
        reply = call(corral, spec, method, admin)
        passed_on = "x-corral-node" in reply.headers  # a node's own 404 (the simulator lacks some routes)
        assert passed_on or reply.text != "404 page not found", f"{method} {spec.path} is in the table, not served"
