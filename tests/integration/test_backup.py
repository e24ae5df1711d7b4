"""`corral backup` against real processes: two `corral sim` nodes, `corral serve` with keys in SQLite.

Backup, then lose everything (config file, database, every model on every node), then restore: the old
keys work again, revoked ones stay revoked, audit records come back and each node holds the same models
with the same digests. A corrupted or incomplete backup is refused by verify and by restore.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.procs import Proc, free_port, new_key, running, start_sim, wait_for

MODELS = {"a": ["llama3.2:1b", "qwen2.5:0.5b"], "b": ["llama3.2:1b", "gemma3:270m"]}


@dataclass
class Site:
    config: Path
    url: str
    sims: dict[str, Proc]
    port: int


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=90)


def serve(config: Path, port: int) -> Proc:
    proc = Proc([sys.executable, "-m", "corral", "serve", "--config", str(config)], port)

    def up() -> bool:
        if proc.proc.poll() is not None:
            raise RuntimeError(proc.output()[-2000:])
        return httpx.get(proc.url + "/health", timeout=1).status_code == 200

    wait_for(up, 20, "corral serve")
    return proc


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def inventory(url: str, key: str) -> dict[str, dict[str, str]]:
    status = httpx.get(url + "/internal/status", headers=bearer(key), timeout=5).json()
    return {n["name"]: n["digests"] for n in status["nodes"]}


def states(url: str, key: str) -> dict[str, str]:
    status = httpx.get(url + "/internal/status", headers=bearer(key), timeout=5).json()
    return {n["name"]: n["state"] for n in status["nodes"]}


def generate(url: str, key: str) -> httpx.Response:
    body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    return httpx.post(url + "/api/generate", json=body, headers=bearer(key), timeout=30)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    sims = {name: start_sim(*models, extra=["--load-seconds", "0.01"]) for name, models in MODELS.items()}
    port = free_port()
    config = tmp_path / "etc" / "corral.yaml"
    config.parent.mkdir()
    settings = {
        "server": {"host": "127.0.0.1", "port": port},
        "backends": [{"name": name, "url": sim.url} for name, sim in sims.items()],
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp_path / 'keys.db'}", "cache_ttl_s": 0.5},
        "audit": {"path": str(tmp_path / "audit.log"), "database": True},
        "routing": {"discovery_interval_s": 0.2},
    }
    config.write_text(yaml.safe_dump(settings))
    with running(*sims.values()):
        yield Site(config, f"http://127.0.0.1:{port}", sims, port)


def test_backup_wipe_restore_brings_back_keys_audit_and_models(site: Site, tmp_path: Path) -> None:
    admin = new_key(site.config, "--name", "ops", "--role", "admin")
    user = new_key(site.config, "--name", "app")
    gone = new_key(site.config, "--name", "old")
    assert corral("keys", "revoke", "old", "--config", str(site.config)).returncode == 0
    backup = tmp_path / "backup"
    with running(serve(site.config, site.port)):
        assert generate(site.url, user).status_code == 200
        # Fleet state: a run-time change, kept in the database (the fleet_nodes table).
        drained = httpx.post(site.url + "/admin/backends/b/drain", headers=bearer(admin), timeout=10)
        assert drained.status_code == 200, drained.text
        assert wait_for(lambda: states(site.url, admin)["b"] == "draining", 10, "b draining")
        before = wait_for(lambda: (inv := inventory(site.url, admin)) and all(inv.values()) and inv, 10, "inventory")
        made = corral("backup", "create", str(backup), "--config", str(site.config), "--url", site.url,
                      "--api-key", admin)  # fmt: skip
        assert made.returncode == 0, made.stderr
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["database"]["tables"]["api_keys"] == 3
    assert manifest["database"]["tables"]["audit_log"] >= 1
    assert manifest["database"]["tables"]["fleet_nodes"] == 1  # the drain
    assert set(manifest["files"]) == {"config.yaml", "database.sqlite", "models.json"}
    recorded = json.loads((backup / "models.json").read_text())["nodes"]
    assert {n: {e["name"]: e["digest"] for e in entries} for n, entries in recorded.items()} == before
    modelfiles = {(n, e["name"]): e["modelfile"] for n, entries in recorded.items() for e in entries}
    # b is draining: its models' Modelfiles come from a where a has them; gemma3 is on b alone.
    assert modelfiles.pop(("b", "gemma3:270m")) is None and "no Modelfile" in made.stderr
    assert all(text.startswith("# Modelfile") for text in modelfiles.values())
    assert corral("backup", "verify", str(backup)).returncode == 0

    # The disaster: the config file, the database and every model on every node are gone.
    site.config.unlink()
    for path in tmp_path.glob("keys.db*"):
        path.unlink()
    for name, sim in site.sims.items():
        for model in MODELS[name]:
            assert httpx.request("DELETE", sim.url + "/api/delete", json={"model": model}).status_code == 200

    planned = corral("backup", "restore", str(backup), "--plan", "--config", str(site.config), "--parts", "config,data")
    assert planned.returncode == 0, planned.stderr
    assert "would write" in planned.stdout and not site.config.exists()
    first = corral("backup", "restore", str(backup), "--apply", "--config", str(site.config), "--parts", "config,data")
    assert first.returncode == 0, first.stderr
    with running(serve(site.config, site.port)):
        assert generate(site.url, user).status_code == 404  # keys back, models not yet
        assert generate(site.url, gone).status_code == 401  # revoked before the backup: still revoked
        assert wait_for(lambda: states(site.url, admin)["b"] == "draining", 10, "b draining again")
        pulled = corral("backup", "restore", str(backup), "--apply", "--config", str(site.config), "--parts", "models",
                        "--url", site.url, "--api-key", admin)  # fmt: skip
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        assert wait_for(lambda: inventory(site.url, admin) == before, 10, "the same inventory")
        assert generate(site.url, user).status_code == 200
        audit = httpx.get(site.url + "/admin/keys", headers=bearer(admin)).json()
        assert {k["name"] for k in audit["keys"]} >= {"ops", "app"}
        again = corral("backup", "restore", str(backup), "--apply", "--config", str(site.config), "--url", site.url,
                       "--api-key", admin)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "pull" not in again.stdout and "is the backed-up file already" in again.stdout


def test_a_corrupted_or_incomplete_backup_is_refused(site: Site, tmp_path: Path) -> None:
    new_key(site.config, "--name", "app")
    backup = tmp_path / "backup"
    made = corral("backup", "create", str(backup), "--config", str(site.config), "--no-models")
    assert made.returncode == 0, made.stderr
    assert corral("backup", "create", str(backup), "--config", str(site.config), "--no-models").returncode == 1

    snapshot = backup / "database.sqlite"
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    checked = corral("backup", "verify", str(backup))
    assert checked.returncode == 1 and "database.sqlite: SHA-256 differs" in checked.stderr

    target = tmp_path / "new" / "corral.yaml"
    refused = corral("backup", "restore", str(backup), "--apply", "--config", str(target))
    assert refused.returncode == 1 and "nothing was restored" in refused.stderr
    assert not target.exists()

    (backup / "config.yaml").unlink()
    missing = corral("backup", "verify", str(backup))
    assert missing.returncode == 1 and "config.yaml: missing" in missing.stderr
    (backup / "manifest.json").write_text("{not json")
    assert "manifest.json: unreadable" in corral("backup", "verify", str(backup)).stderr
