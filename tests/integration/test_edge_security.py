"""Security holes at the edge (issue: the edge), each against real processes: DNS rebinding on the
default loopback setup, browser origins on the admin plane, forged X-Forwarded-For lines, JWT subjects
named like API keys, hostile model names in logs, and a node whose model list went stale."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt

from procs import new_key, start_corral, start_sim, wait_for

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0"]
GEN = {"model": "m:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
SECRET = "a-test-secret-of-at-least-32-bytes!!"


def test_dns_rebinding_is_refused_on_the_loopback_default() -> None:
    """A page on evil.example rebinds its name to 127.0.0.1: its requests carry that Host (and Origin).
    Like Ollama on loopback, Corral answers 403, for inference and for the admin plane."""
    sim = start_sim("m:1b", extra=FAST)
    corral = start_corral({"backends": [{"name": "n", "url": sim.url}], "server": {"allowed_hosts": ["corral.lan"]}})
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    try:
        add = httpx.post(corral.url + "/admin/backends", headers=evil, json={"name": "x", "url": "http://127.0.0.1:9"})
        assert add.status_code == 403
        assert httpx.post(corral.url + "/api/generate", headers={"Host": "evil.example"}, json=GEN).status_code == 403
        assert httpx.get(corral.url + "/admin/backends").json()["backends"][0]["name"] == "n"  # nothing was added
        for host in (f"localhost:{corral.port}", f"127.0.0.1:{corral.port}", "corral.lan", "gpu.internal"):
            assert httpx.post(corral.url + "/api/generate", headers={"Host": host}, json=GEN).status_code == 200, host
    finally:
        corral.stop()
        sim.stop()


def test_a_browser_origin_never_reaches_admin_without_keys() -> None:
    sim = start_sim("m:1b", extra=FAST)
    corral = start_corral({"backends": [{"name": "n", "url": sim.url}], "server": {"cors": {"allow_origins": ["*"]}}})
    page = {"Origin": "http://localhost:3000"}
    try:
        assert httpx.get(corral.url + "/admin/backends", headers=page).status_code == 403
        drain = httpx.post(corral.url + "/admin/backends/n/drain", headers=page)
        assert drain.status_code == 403
        assert httpx.post(corral.url + "/api/generate", headers=page, json=GEN).status_code == 200  # CORS allows it
        assert httpx.get(corral.url + "/admin/backends").status_code == 200  # a local tool, no Origin
    finally:
        corral.stop()
        sim.stop()


def test_a_second_forwarded_for_line_cannot_choose_the_client_address() -> None:
    """Behind a trusted proxy, the client's own X-Forwarded-For line comes first and the proxy's line
    (with the real address) last: limits per client address follow the real one."""
    sim = start_sim("m:1b", extra=FAST)
    corral = start_corral(
        {
            "backends": [{"name": "n", "url": sim.url}],
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "limits": {"per_ip_rpm": 2},
        }
    )
    try:
        codes = []
        for forged in ("9.9.9.1", "9.9.9.2", "9.9.9.3"):
            headers = [("x-forwarded-for", forged), ("x-forwarded-for", "203.0.113.7")]
            codes.append(httpx.post(corral.url + "/api/generate", headers=headers, json=GEN).status_code)
        assert codes == [200, 200, 429]
    finally:
        corral.stop()
        sim.stop()


def test_a_jwt_subject_named_like_a_key_has_its_own_limits(tmp_path: Path) -> None:
    sim = start_sim("m:1b", extra=FAST)
    corral = start_corral(
        {
            "backends": [{"name": "n", "url": sim.url}],
            "auth": {"enabled": True, "store_url": f"sqlite:///{tmp_path / 'keys.db'}", "jwt": {"secret": SECRET}},
        }
    )
    try:
        key = new_key(corral.config_path, "--name", "alice", "--rpm", "1")  # type: ignore[attr-defined]
        token = jwt.encode({"sub": "alice", "rpm": 1, "exp": int(time.time()) + 300}, SECRET)

        def gen(credential: str) -> int:
            headers = {"Authorization": f"Bearer {credential}"}
            return httpx.post(corral.url + "/api/generate", headers=headers, json=GEN, timeout=30).status_code

        assert gen(key) == 200 and gen(key) == 429  # the key's minute is used up...
        assert gen(token) == 200  # ...and the token's subject "alice" is someone else
    finally:
        corral.stop()
        sim.stop()


def test_a_huge_model_name_is_truncated_in_logs_and_audit(tmp_path: Path) -> None:
    sim = start_sim("m:1b", extra=FAST)
    audit = tmp_path / "audit.log"
    corral = start_corral({"backends": [{"name": "n", "url": sim.url}], "audit": {"path": str(audit)}})
    try:
        reply = httpx.post(corral.url + "/api/generate", json={**GEN, "model": "x" * 1_000_000}, timeout=30)
        assert reply.status_code == 404

        def generate_record() -> dict[str, object] | None:
            lines = audit.read_text().splitlines() if audit.exists() else []
            found = [json.loads(line) for line in lines if '"/api/generate"' in line]
            return found[-1] if found else None

        record = wait_for(generate_record, 10, "the audit record")
        assert len(record["model"]) < 300 and len(audit.read_text()) < 4096
        access = [line for line in corral.output().splitlines() if '"route"' in line]
        assert access and all(len(line) < 4096 for line in access)
    finally:
        corral.stop()
        sim.stop()


def test_a_stale_model_list_is_refreshed_and_another_node_serves() -> None:
    """The model was deleted on the preferred node behind Corral's back: that node's 404 is not passed
    on while another node has the model, and the node's list is re-read."""
    stale = start_sim("m:1b", extra=FAST)
    good = start_sim("m:1b", extra=FAST)
    corral = start_corral(
        {
            "backends": [{"name": "stale", "url": stale.url, "priority": 10}, {"name": "good", "url": good.url}],
            "routing": {"strategy": "priority", "discovery_interval_s": 3600},
        }
    )
    try:
        assert httpx.request("DELETE", stale.url + "/api/delete", json={"model": "m:1b"}).status_code == 200
        reply = httpx.post(corral.url + "/api/generate", json=GEN, timeout=30)
        assert reply.status_code == 200 and reply.headers["x-corral-node"] == "good"

        def relisted() -> bool:
            nodes = httpx.get(corral.url + "/internal/status").json()["nodes"]
            return not any(n["name"] == "stale" and "m:1b" in json.dumps(n.get("models", [])) for n in nodes)

        wait_for(relisted, 10, "the stale node's list to be re-read")
        again = httpx.post(corral.url + "/api/generate", json=GEN, timeout=30)
        assert again.headers["x-corral-node"] == "good"
    finally:
        for proc in (corral, stale, good):
            proc.stop()
