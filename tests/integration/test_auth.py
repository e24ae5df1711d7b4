"""API keys against real processes: `corral keys` (SQLite store), `corral serve` with auth on, a sim."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import yaml

from procs import Proc, new_key, sim_stats, single_process, start_corral, start_sim, wait_for

MARKER = "secret-marker-9d4e1b7a"


@dataclass
class Secured:
    corral: Proc
    sim: Proc
    config: Path
    audit: Path
    admin: str
    user: str  # may use llama* only


def keys(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "keys", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def corral_config(tmp: Path, sim: Proc) -> dict[str, object]:
    return {
        "backends": [{"name": "n", "url": sim.url}],
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}", "cache_ttl_s": 0.5},
        "audit": {"path": str(tmp / "audit.log"), "database": True},
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("auth")
    sim = start_sim("llama3.2:1b", "qwen2.5:7b", extra=["--tokens-per-second", "2000", "--load-seconds", "0"])
    config = tmp / "corral.yaml"
    config.write_text(yaml.safe_dump(corral_config(tmp, sim)))
    admin = new_key(config, "--name", "ops", "--role", "admin")
    user = new_key(config, "--name", "app", "--models", "llama*")
    corral = start_corral(corral_config(tmp, sim))
    yield Secured(corral, sim, config, tmp / "audit.log", admin, user)
    corral.stop()
    sim.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(s: Secured, headers: dict[str, str], model: str = "llama3.2:1b") -> httpx.Response:
    return httpx.post(
        s.corral.url + "/api/chat",
        headers=headers,
        timeout=30,
        json={"model": model, "messages": [{"role": "user", "content": MARKER}], "stream": False},
    )


def test_missing_malformed_and_wrong_keys_are_401_in_each_apis_shape(secured: Secured) -> None:
    for headers in (
        {},
        bearer("nope"),
        bearer("crl_abcdefgh_" + "x" * 43),
        {"Authorization": "Basic dTpw"},
        {"X-API-Key": "crl_zzzzzzzz_" + "y" * 43},
    ):
        reply = chat(secured, headers)
        assert reply.status_code == 401 and reply.json() == {"error": "unauthorized"}, headers
    v1 = httpx.post(secured.corral.url + "/v1/chat/completions", json={"model": "llama3.2:1b", "messages": []})
    assert v1.status_code == 401 and v1.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=secured.corral.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=secured.corral.url).list()
    assert err.value.status_code == 401


def test_good_keys_work_with_the_official_clients(secured: Secured) -> None:
    client = ollama.Client(host=secured.corral.url, headers=bearer(secured.user), timeout=30)
    assert client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}]).done
    oa = openai.OpenAI(base_url=secured.corral.url + "/v1", api_key=secured.admin, max_retries=0, timeout=30)
    assert oa.chat.completions.create(model="qwen2.5:7b", messages=[{"role": "user", "content": "hi"}]).choices
    assert chat(secured, {"X-API-Key": secured.user}).status_code == 200
    assert httpx.get(secured.corral.url + "/health").status_code == 200
    assert httpx.get(secured.corral.url + "/ready").status_code == 200


def test_model_allow_list_on_inference_and_listings(secured: Secured) -> None:
    denied = chat(secured, bearer(secured.user), model="qwen2.5:7b")
    assert denied.status_code == 403 and "qwen2.5:7b" in denied.json()["error"]
    names = {
        m["model"] for m in httpx.get(secured.corral.url + "/api/tags", headers=bearer(secured.user)).json()["models"]
    }
    assert names == {"llama3.2:1b"}
    v1 = httpx.get(secured.corral.url + "/v1/models", headers=bearer(secured.user)).json()["data"]
    assert [m["id"] for m in v1] == ["llama3.2:1b"]
    assert httpx.get(secured.corral.url + "/v1/models/qwen2.5:7b", headers=bearer(secured.user)).status_code == 404
    everything = httpx.get(secured.corral.url + "/api/tags", headers=bearer(secured.admin)).json()["models"]
    assert {m["model"] for m in everything} == {"llama3.2:1b", "qwen2.5:7b"}


def test_scopes_and_path_tricks_never_bypass_auth(secured: Secured) -> None:
    url = secured.corral.url
    assert httpx.get(url + "/admin/backends", headers=bearer(secured.user)).status_code == 403
    assert (
        httpx.post(
            url + "/api/pull", headers={**bearer(secured.user), "X-Corral-Node": "n"}, json={"model": "x"}
        ).status_code
        == 403
    )
    assert httpx.get(url + "/admin/backends", headers=bearer(secured.admin)).status_code == 200
    for path in (
        "/admin/keys",
        "//admin/keys",
        "/api/../admin/keys",
        "/%61dmin/keys",
        "/admin/keys/",
        "/admin%2Fkeys",
        "/admin/keys?x=1",
    ):
        for method in ("GET", "HEAD", "OPTIONS", "POST"):
            reply = httpx.request(method, url + path, headers=bearer(secured.user))
            assert reply.status_code in (401, 403, 404, 405), (method, path, reply.status_code)
            reply = httpx.request(method, url + path)
            assert reply.status_code in (401, 404, 405), (method, path, reply.status_code)


def test_admin_api_creates_rotates_and_revokes_keys(secured: Secured) -> None:
    url = secured.corral.url
    created = httpx.post(url + "/admin/keys", headers=bearer(secured.admin), json={"name": "temp", "models": ["*"]})
    assert created.status_code == 201
    key = created.json()["key"]
    assert chat(secured, bearer(key)).status_code == 200
    bad = httpx.post(url + "/admin/keys", headers=bearer(secured.admin), json={"name": "x", "role": "root"})
    assert bad.status_code == 400 and "role" in bad.json()["error"]
    rotated = httpx.post(url + "/admin/keys/temp/rotate", headers=bearer(secured.admin)).json()["key"]
    assert chat(secured, bearer(key)).status_code == 401
    assert chat(secured, bearer(rotated)).status_code == 200
    assert httpx.delete(url + "/admin/keys/temp", headers=bearer(secured.admin)).status_code == 200
    assert chat(secured, bearer(rotated)).status_code == 401
    listed = httpx.get(url + "/admin/keys", headers=bearer(secured.admin)).json()["keys"]
    assert all("key" not in k and "hash" not in k for k in listed)


def test_a_key_revoked_from_the_cli_stops_working_within_the_cache_ttl(secured: Secured) -> None:
    key = new_key(secured.config, "--name", "short-lived")
    assert chat(secured, bearer(key)).status_code == 200
    assert keys(secured.config, "revoke", "short-lived").returncode == 0
    wait_for(lambda: chat(secured, bearer(key)).status_code == 401, 5, "the revocation to reach Corral")
    expired = new_key(secured.config, "--name", "old", "--expires", "2020-01-01")
    assert chat(secured, bearer(expired)).status_code == 401


def test_audit_lines_for_every_request_and_never_the_prompt(secured: Secured) -> None:
    chat(secured, bearer(secured.user))
    chat(secured, bearer("crl_badbadba_" + "z" * 43))

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in secured.audit.read_text().splitlines()] if secured.audit.exists() else []

    def chats() -> list[dict[str, object]]:
        app = [e for e in lines() if e.get("key_name") == "app"]
        return [e for e in app if e.get("route") == "/api/chat" and e["status"] == 200]

    wait_for(lambda: chats() and any(e.get("status") == 401 for e in lines()), 10, "audit lines to be written")
    ok = chats()
    assert ok and ok[-1]["prompt_sha256"] and ok[-1]["prompt_len"] == len(MARKER)
    # A keyed fingerprint: the plain hash of a guessed prompt does not find it in the log.
    assert ok[-1]["prompt_sha256"] != hashlib.sha256(MARKER.encode()).hexdigest()
    assert ok[-1]["key_prefix"] and secured.user not in secured.audit.read_text()
    assert MARKER not in secured.audit.read_text()
    assert MARKER not in secured.corral.output()
    import sqlite3

    def rows() -> list[tuple[object, ...]]:
        with sqlite3.connect(secured.config.parent / "keys.db") as db:
            return db.execute("select key_name, status, route, prompt_sha256 from audit_log").fetchall()

    wait_for(lambda: any(r[1] == 401 for r in rows()), 10, "audit rows in the database")
    assert any(r[0] == "app" and r[1] == 200 and r[3] for r in rows())


def test_keys_survive_a_restart(secured: Secured, tmp_path: Path) -> None:
    config = corral_config(Path(secured.config.parent), secured.sim)
    config["audit"] = {"path": str(tmp_path / "audit.log")}
    again = start_corral(config)
    try:
        assert chat_at(again, bearer(secured.user)).status_code == 200
    finally:
        again.stop()


def chat_at(corral: Proc, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        corral.url + "/api/generate",
        headers=headers,
        timeout=30,
        json={"model": "llama3.2:1b", "prompt": "x", "stream": False},
    )


def test_a_public_address_needs_keys_or_an_explicit_choice(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"server": {"host": "0.0.0.0"}}))
    result = subprocess.run(
        [sys.executable, "-m", "corral", "config", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "auth.enabled" in result.stderr
    path.write_text(yaml.safe_dump({"server": {"host": "0.0.0.0"}, "auth": {"enabled": False}}))
    result = subprocess.run(
        [sys.executable, "-m", "corral", "config", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0


@single_process("a node cap below the worker count: each worker keeps one slot and its own queue (docs/deploy.md)")
def test_the_admission_queue_serves_keys_in_turn_and_priority_classes_first(tmp_path: Path) -> None:
    sim = start_sim("llama3.2:1b", extra=["--tokens-per-second", "20", "--load-seconds", "0"])
    config = {
        "backends": [{"name": "one", "url": sim.url, "max_concurrency": 1}],
        "queue": {"max_len": 8, "max_wait_s": 60},
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp_path / 'keys.db'}"},
    }
    path = tmp_path / "corral.yaml"
    path.write_text(yaml.safe_dump(config))
    admin = new_key(path, "--name", "ops", "--role", "admin")
    bulk = new_key(path, "--name", "bulk")
    steady = new_key(path, "--name", "steady")
    vip = new_key(path, "--name", "vip", "--priority", "5")
    corral = start_corral(config)
    served: list[str] = []

    def send(name: str, key: str, tokens: int = 4) -> int:
        reply = httpx.post(
            corral.url + "/api/generate",
            headers=bearer(key),
            timeout=60,
            json={"model": "llama3.2:1b", "prompt": "x", "stream": False, "options": {"num_predict": tokens}},
        )
        if reply.status_code == 200:
            served.append(name)
        return reply.status_code

    def waiting() -> int:
        reply = httpx.get(corral.url + "/internal/status", headers=bearer(admin), timeout=5)
        return int(reply.json()["queue"]["waiting"])

    try:
        with ThreadPoolExecutor(10) as pool:
            # One slot, held for 10 s by a long bulk request while the queue fills: three more from
            # `bulk`, then two each from `steady` and `vip`.
            first = [pool.submit(send, "bulk", bulk, 200)]
            wait_for(lambda: sim_stats(sim)["in_flight"] == 1, 15, "the long request to start")
            first += [pool.submit(send, "bulk", bulk) for _ in range(3)]
            wait_for(lambda: waiting() >= 3, 15, "bulk's burst to queue")
            later = [pool.submit(send, "steady", steady) for _ in range(2)]
            wait_for(lambda: waiting() >= 5, 15, "steady to queue")
            later += [pool.submit(send, "vip", vip) for _ in range(2)]
            wait_for(lambda: waiting() >= 7, 15, "vip to queue")
            codes = [f.result() for f in first + later]
        assert all(code == 200 for code in codes), codes
        # bulk's first request held the slot; then vip's class goes first, then steady and bulk in turn.
        assert served[0] == "bulk" and served[1:3] == ["vip", "vip"], served
        assert sorted(served[3:5]) == ["bulk", "steady"], served
        assert served.index("steady") < len(served) - 2, served  # not behind all of bulk's burst
    finally:
        corral.stop()
        sim.stop()
