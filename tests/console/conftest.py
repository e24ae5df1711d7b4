"""A real fleet with keys on, and a real headless Chromium (Debian's, driven by Playwright; nothing is
downloaded at test time) for the web console's tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs import Proc, start_corral, start_sim, wait_for

CHROMIUM = Path("/usr/bin/chromium")
# environment.md, "Browser": no sandbox as root, nothing fetched in the background.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
FAST = ["--tokens-per-second", "400", "--load-seconds", "0.05", "--parallel", "4"]


def new_key(config: Path, name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "corral", "keys", "create", "--name", name, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@dataclass
class ConsoleFleet:
    """Two `corral sim` nodes behind one `corral serve` with API keys on."""

    config: dict[str, Any]
    corral: Proc
    sims: dict[str, Proc]
    admin: str
    user: str
    audit: Path
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.corral.url

    def status(self) -> dict[str, Any]:
        reply = httpx.get(self.url + "/internal/status", headers={"Authorization": f"Bearer {self.admin}"}, timeout=5)
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data

    def node_state(self, name: str) -> str:
        return str(next(n["state"] for n in self.status()["nodes"] if n["name"] == name))

    def restart_corral(self) -> None:
        self.corral.stop()
        self.corral = start_corral(self.config, timeout=40)  # the same port, key database and audit file

    def kill_sim(self, name: str) -> None:
        self.sims[name].stop(sig_kill=True)

    def start_sim_again(self, name: str) -> None:
        self.sims[name] = start_sim(*self.models[name], port=self.sims[name].port, extra=FAST, timeout=40)

    def stop(self) -> None:
        self.corral.stop()
        for sim in self.sims.values():
            sim.stop()


@pytest.fixture(scope="session")
def console_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    tmp = tmp_path_factory.mktemp("console")
    models = {"node-a": ("llama3.2:1b", "qwen2.5:7b", "mistral:7b"), "node-b": ("llama3.2:1b", "nomic-embed-text")}
    procs: list[Proc] = []
    fleet: ConsoleFleet | None = None
    try:
        with ThreadPoolExecutor(2) as pool:  # two processes starting at once: half the wait
            starting = [pool.submit(start_sim, *models[name], extra=FAST, timeout=40) for name in ("node-a", "node-b")]
            a, b = (future.result() for future in starting)
        procs += [a, b]
        # node-b gets other weights under a name node-a also lists (a model re-created by hand): drift.
        made = {"model": "mistral:7b", "from": "llama3.2:1b", "stream": False}
        assert httpx.post(b.url + "/api/create", json=made, timeout=10).status_code == 200
        config: dict[str, Any] = {
            "backends": [
                {"name": "node-a", "url": a.url, "parallel": 4, "vram_gb": 24},
                {"name": "node-b", "url": b.url, "parallel": 4, "max_concurrency": 8},
            ],
            "health": {"interval_s": 0.3, "timeout_s": 1, "rise": 1, "fall": 1},
            "routing": {"discovery_interval_s": 0.5, "retries": 1},
            "auth": {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}", "cache_ttl_s": 0.5},
            "audit": {"path": str(tmp / "audit.log")},
        }
        corral = start_corral(config, timeout=40)
        procs.append(corral)
        path = corral.config_path  # type: ignore[attr-defined]
        admin = new_key(path, "ops-admin", "--role", "admin")  # the first admin key comes from the CLI
        spec = {"name": "team-qwen", "models": ["qwen2.5:7b"], "rpm": 600, "tpm": 100000}
        made = httpx.post(corral.url + "/admin/keys", json=spec, headers={"Authorization": f"Bearer {admin}"})
        assert made.status_code == 201, made.text
        user = str(made.json()["key"])
        fleet = ConsoleFleet(config, corral, {"node-a": a, "node-b": b}, admin, user, tmp / "audit.log", models)

        def all_up() -> bool:
            return all(n["state"] == "up" and n["models"] for n in fleet.status()["nodes"])

        wait_for(all_up, 15, "both nodes up with their models")
        yield fleet
    finally:
        if fleet is not None:
            fleet.stop()  # the processes it holds now (restarted ones included)
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")  # playwright's sync API holds an event loop: gone before other modules run
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/install.sh --system installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()
