"""Backup and recovery times on a simulated fleet: `python -m bench.backup_times [--nodes N] [--models M]`.

Starts N `corral sim` nodes with M models each and `corral serve` with keys in SQLite (1,000 keys, 20,000
audit records), then times `corral backup create`, the loss of everything, `restore --parts config,data`,
a restart, and `restore --parts models` (every model pulled again through Corral). The sim's pulls take
about a second each, like a cached pull; real pulls take as long as the weights take to download.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

from corral.adapters.audit import AuditRecord, SqlAuditSink
from corral.adapters.keystore import KeySpec, SqlKeyStore
from corral.domain.keys import Role
from tests.procs import Proc, free_port, running, start_sim, wait_for

NAMES = ["llama3.2:1b", "qwen2.5:0.5b", "gemma3:270m", "phi3:mini", "mistral:7b", "llama3.1:8b", "qwen2.5:7b"]


def corral(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "corral", *args], check=True, capture_output=True, timeout=600)
    return time.monotonic() - started


async def fill(url: str, keys: int, records: int) -> str:
    store = SqlKeyStore(url)
    await store.migrate()
    _, admin = await store.create(KeySpec("ops", Role.ADMIN), time.time())
    for i in range(keys):
        await store.create(KeySpec(f"app-{i}"), time.time())
    sink = SqlAuditSink(store.engine)
    now = datetime.now(UTC).timestamp()
    for i in range(records):
        await sink.write(AuditRecord.for_request(now + i, route="/api/chat", status=200, model="llama3.2:1b"))
    await sink.close()
    await store.close()
    return admin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--models", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corral-backup-bench-"))
    sims = [start_sim(*NAMES[: args.models], extra=["--load-seconds", "0.01"]) for _ in range(args.nodes)]
    port = free_port()
    config = tmp / "corral.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"port": port},
        "backends": [{"name": f"n{i}", "url": s.url} for i, s in enumerate(sims)],
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}"},
        "audit": {"path": str(tmp / "audit.log"), "database": True},
        "routing": {"discovery_interval_s": 0.5},
    }))  # fmt: skip
    admin = asyncio.run(fill(f"sqlite:///{tmp / 'keys.db'}", 1000, 20_000))
    url = f"http://127.0.0.1:{port}"
    auth = ["--url", url, "--api-key", admin]

    def serve() -> Proc:
        proc = Proc([sys.executable, "-m", "corral", "serve", "--config", str(config)], port)
        wait_for(lambda: httpx.get(url + "/health", timeout=1).status_code == 200, 30, "corral")
        return proc

    with running(*sims):
        with running(serve()):
            bearer = {"authorization": f"Bearer {admin}"}
            wait_for(lambda: httpx.get(url + "/api/tags", headers=bearer).json()["models"], 10, "models")
            create = corral("backup", "create", str(tmp / "backup"), "--config", str(config), *auth)
        verify = corral("backup", "verify", str(tmp / "backup"))
        shutil.copy(config, tmp / "keep.yaml")
        config.unlink()
        for path in tmp.glob("keys.db*"):
            path.unlink()
        for sim in sims:
            for name in NAMES[: args.models]:
                httpx.request("DELETE", sim.url + "/api/delete", json={"model": name})
        data = corral("backup", "restore", str(tmp / "backup"), "--apply", "--config", str(config),
                      "--parts", "config,data")  # fmt: skip
        started = time.monotonic()
        with running(serve()):
            up = time.monotonic() - started
            models = corral("backup", "restore", str(tmp / "backup"), "--apply", "--config", str(config),
                            "--parts", "models", *auth)  # fmt: skip
    size = sum(p.stat().st_size for p in (tmp / "backup").rglob("*") if p.is_file())
    print(f"| {args.nodes} nodes × {args.models} models, 1,001 keys, 20,000 audit records | backup {create:.1f} s "
          f"({size / 1e6:.1f} MB) | verify {verify:.1f} s | config + keys + audit {data:.1f} s | Corral up {up:.1f} s "
          f"| {args.nodes * args.models} pulls {models:.1f} s | total {data + up + models:.1f} s |")  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
