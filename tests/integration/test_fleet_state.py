"""Run-time fleet changes shared by two replicas through the key store's database (SQLite here; the HA
test runs the same over PostgreSQL): a change made through either replica reaches the other within
5 s, and a restarted replica starts from the stored state, not only from its YAML."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs import Proc, new_key, sim_stats, start_corral, start_sim, wait_for
from tests.contract.servers import Server, ServerUnavailable, start_postgres
from tests.ha.test_failover import bootstrap_admin, create_key

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0"]


@pytest.fixture
def sims() -> Iterator[tuple[Proc, Proc, Proc]]:
    procs = [start_sim("m:1b", extra=FAST) for _ in range(3)]
    yield procs[0], procs[1], procs[2]
    for proc in procs:
        proc.stop()


def backends(replica: Proc, admin: str) -> dict[str, str]:
    reply = httpx.get(replica.url + "/admin/backends", headers=bearer(admin), timeout=5)
    assert reply.status_code == 200, reply.text
    return {b["name"]: b["state"] for b in reply.json()["backends"]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def converged(replica: Proc, admin: str, expected: dict[str, str], what: str) -> float:
    """Seconds until `replica` lists exactly `expected`; fails beyond the 5 s the issue allows."""
    started = time.monotonic()
    wait_for(lambda: backends(replica, admin) == expected, 5, what)
    return time.monotonic() - started


def generate(replica: Proc, key: str, n: int) -> None:
    for _ in range(n):
        body: dict[str, Any] = {"model": "m:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
        reply = httpx.post(replica.url + "/api/generate", json=body, headers=bearer(key), timeout=30)
        assert reply.status_code == 200, reply.text


def test_changes_through_one_replica_reach_the_other_and_survive_a_restart(
    tmp_path: Path, sims: tuple[Proc, Proc, Proc]
) -> None:
    a, b, c = sims
    config = {
        "backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}],
        "health": {"interval_s": 0.3, "rise": 1, "fall": 1},
        "auth": {"enabled": True, "store_url": f"sqlite:///{tmp_path / 'corral.db'}", "fleet_poll_s": 0.5},
    }
    one = start_corral(dict(config))
    two = start_corral(dict(config))
    try:
        admin = new_key(one.config_path, "--name", "ops", "--role", "admin")  # type: ignore[attr-defined]
        user = new_key(one.config_path, "--name", "app")  # type: ignore[attr-defined]
        assert backends(two, admin) == {"a": "up", "b": "up"}

        # Drain through one: the other stops sending to the node too.
        drained = httpx.post(one.url + "/admin/backends/a/drain", headers=bearer(admin), timeout=5)
        assert drained.status_code == 200 and drained.json()["state"] == "draining"
        converged(two, admin, {"a": "draining", "b": "up"}, "the drain to reach the other replica")
        before = sim_stats(a)["requests"].get("/api/generate", 0)
        generate(two, user, 6)
        assert sim_stats(a)["requests"].get("/api/generate", 0) == before

        # Add through the other: the first picks the node up, health-checked and routable.
        added = httpx.post(two.url + "/admin/backends", headers=bearer(admin), json={"name": "c", "url": c.url})
        assert added.status_code == 201, added.text
        converged(one, admin, {"a": "draining", "b": "up", "c": "up"}, "the added node on the other replica")

        # Remove a YAML node: gone everywhere, and it stays gone across a restart.
        assert httpx.delete(one.url + "/admin/backends/b", headers=bearer(admin), timeout=5).status_code == 200
        converged(two, admin, {"a": "draining", "c": "up"}, "the removal to reach the other replica")
        two.stop()
        two = start_corral(dict(config))
        # Applied before it serves: the first answer already shows the stored state.
        assert backends(two, admin) == {"a": "draining", "c": "up"}
        generate(two, user, 4)
        assert sim_stats(a)["requests"].get("/api/generate", 0) == before

        # Undrain through the restarted replica; the first follows.
        assert httpx.post(two.url + "/admin/backends/a/undrain", headers=bearer(admin), timeout=5).status_code == 200
        converged(one, admin, {"a": "up", "c": "up"}, "the undrain to reach the first replica")
    finally:
        one.stop()
        two.stop()


def restart_postgres(pg: Server) -> None:
    """Start the same cluster again (after a fast shutdown) on its port, as the same user."""
    args = [str(a) for a in pg.proc.args]  # type: ignore[union-attr]
    user = "postgres" if os.geteuid() == 0 else None
    with pg.log.open("ab") as out:
        pg.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, user=user, cwd=pg.log.parent)
    port = int(pg.url.rsplit(":", 1)[1].split("/")[0])

    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    wait_for(accepts, 30, "postgres back")


def test_while_the_database_is_down_known_keys_work_and_fleet_changes_are_refused(
    sims: tuple[Proc, Proc, Proc],
) -> None:
    a, b, _ = sims
    try:
        pg_cm = start_postgres()
        pg = pg_cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    config = {
        "backends": [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}],
        "auth": {"enabled": True, "store_url": pg.url, "cache_ttl_s": 0.5, "fleet_poll_s": 0.5},
    }
    replica = start_corral(config)
    try:
        admin = bootstrap_admin(pg.url)
        user = create_key(replica.url, admin, "app")
        generate(replica, user, 1)
        assert httpx.post(replica.url + "/admin/backends/a/drain", headers=bearer(admin), timeout=5).status_code == 200

        pg.stop(signal.SIGINT)  # the database goes away
        wait_for(lambda: "cannot read the fleet state" in replica.output(), 10, "the poller to notice")
        generate(replica, user, 3)  # a key this replica knew keeps working, well past the cache TTL
        refused = httpx.post(replica.url + "/admin/backends/a/undrain", headers=bearer(admin), timeout=10)
        assert refused.status_code == 503 and "fleet state database" in refused.json()["error"], refused.text
        unknown = httpx.post(
            replica.url + "/api/generate", headers=bearer("crl_abcdefgh_" + "x" * 43), json={"model": "m:1b"}
        )
        assert unknown.status_code == 503 and "key database" in unknown.json()["error"], unknown.text
        assert backends(replica, admin) == {"a": "draining", "b": "up"}  # the last state, kept

        restart_postgres(pg)
        wait_for(lambda: "fleet state readable again" in replica.output(), 10, "the poller to recover")
        undrained = httpx.post(replica.url + "/admin/backends/a/undrain", headers=bearer(admin), timeout=10)
        assert undrained.status_code == 200 and undrained.json()["state"] == "up", undrained.text
    finally:
        replica.stop()
        pg_cm.__exit__(None, None, None)
