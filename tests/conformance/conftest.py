"""Real processes for the HTTP conformance suite: `corral sim` nodes, an h11 fake node, and `corral serve`
with the edge limits set low enough to reach within a test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs import Proc, start_corral, start_sim, wait_for
from tests.conformance.peers import FakeNode

MIB = 1024 * 1024
HEALTH = {"interval_s": 0.5, "timeout_s": 2, "rise": 1, "fall": 2}


@dataclass
class Sims:
    fast: Proc  # model edge:1b
    slow: Proc  # model slow:1b, 20 tokens a second


@dataclass
class Keyed:
    corral: Proc
    key: str


def serve(backends: list[dict[str, Any]], server: dict[str, Any], **more: Any) -> Proc:
    return start_corral(
        {"backends": backends, "server": server, "health": HEALTH, "routing": {"discovery_interval_s": 1}, **more}
    )


def wait_all_up(corral: Proc, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def all_up() -> bool:
        status = httpx.get(corral.url + "/internal/status", headers=headers, timeout=2).json()
        return all(n["state"] == "up" and n["models"] for n in status["nodes"])

    try:
        wait_for(all_up, 15, "every node up with its models discovered")
    except TimeoutError:
        corral.stop()
        raise


@pytest.fixture(scope="package")
def sims() -> Iterator[Sims]:
    fast = start_sim("edge:1b", extra=["--tokens-per-second", "2000", "--load-seconds", "0", "--parallel", "8"])
    try:
        slow = start_sim("slow:1b", extra=["--tokens-per-second", "20", "--load-seconds", "0", "--parallel", "8"])
    except BaseException:
        fast.stop()
        raise
    try:
        yield Sims(fast, slow)
    finally:
        slow.stop()
        fast.stop()


def _backends(sims: Sims) -> list[dict[str, Any]]:
    return [
        {"name": "fast", "url": sims.fast.url, "parallel": 8},
        {"name": "slow", "url": sims.slow.url, "parallel": 8},
    ]


@pytest.fixture(scope="package")
def edge(sims: Sims) -> Iterator[Proc]:
    """Corral with short head and body timeouts and a 1 MiB body cap."""
    corral = serve(_backends(sims), {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "max_body_bytes": MIB})
    wait_all_up(corral)
    try:
        yield corral
    finally:
        corral.stop()


@pytest.fixture(scope="module")
def capped(sims: Sims) -> Iterator[Proc]:
    """Corral with room for 6 connections, 3 per client address."""
    corral = serve(_backends(sims), {"max_connections": 6, "max_connections_per_client": 3})
    wait_all_up(corral)
    try:
        yield corral
    finally:
        corral.stop()


@pytest.fixture(scope="module")
def keyed(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """Corral with API keys required and a 1 MiB body cap."""
    tmp = tmp_path_factory.mktemp("keyed")
    auth = {"enabled": True, "store_url": f"sqlite:///{tmp / 'keys.db'}"}
    corral = serve(_backends(sims), {"max_body_bytes": MIB}, auth=auth)
    try:
        config: Path = corral.config_path  # type: ignore[attr-defined]
        command = [sys.executable, "-m", "corral", "keys", "create", "--name", "edge", "--role", "admin"]
        created = subprocess.run(
            [*command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        wait_all_up(corral, key)
        yield Keyed(corral, key)
    finally:
        corral.stop()


@dataclass
class Faked:
    corral: Proc
    node: FakeNode


@pytest.fixture(scope="module")
def faked() -> Iterator[Faked]:
    """Corral in front of an h11 node that records every request it receives."""
    node = FakeNode()
    try:
        corral = serve([{"name": "h11", "url": node.url}], {})
        wait_all_up(corral)
    except BaseException:
        node.close()
        raise
    try:
        yield Faked(corral, node)
    finally:
        corral.stop()
        node.close()
