"""High availability, proven with real processes on loopback (issue 10 §3):

    HAProxy (the shipped deploy/haproxy/haproxy.cfg, ports rewritten)
      → two Corral replicas, sharing a real Redis (limits) and a real PostgreSQL (keys, fleet state)
        → three `corral sim` nodes

Under a steady mix of streamed and whole generations the test kills a replica (SIGKILL), drains a
node through the survivor, restarts the killed replica and checks it honours the drain, kills a
node, revokes a key on one replica and times the other's refusal, and restarts everything. It prints
what the clients saw and asserts: no whole (non-streamed) request failed except those in flight on
the killed replica at that instant, proven from timestamps; each limit held exactly across the
replicas; the restarted replica took traffic again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs import Proc, free_port, log_records, sim_stats, start_corral, start_sim, wait_for
from tests.contract.servers import Server, ServerUnavailable, start_postgres, start_redis
from tests.deploy.test_front_proxies import Front, server_states, start_haproxy
from tests.ha.load import Load, Outcome, summary

# The one switch for worker processes per replica: 2 once `corral serve --workers` (issue 10 §1) is in.
WORKERS = 2

pytestmark = pytest.mark.timeout(240)

SIM_FLAGS = ["--tokens-per-second", "150", "--load-seconds", "0", "--parallel", "16"]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def generate(url: str, key: str, request_id: str) -> httpx.Response:
    body = {"model": "m:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    return httpx.post(url + "/api/generate", json=body, headers={**bearer(key), "x-request-id": request_id}, timeout=30)


def nodes(url: str, admin: str) -> list[dict[str, Any]]:
    reply = httpx.get(url + "/admin/backends", headers=bearer(admin), timeout=5)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["backends"])


def backends(url: str, admin: str) -> dict[str, str]:
    return {b["name"]: b["state"] for b in nodes(url, admin)}


def in_flight(url: str, admin: str, node: str | None = None) -> int:
    return sum(int(b["in_flight"]) for b in nodes(url, admin) if node in (None, b["name"]))


def create_key(url: str, admin: str, name: str, **limits: int) -> str:
    reply = httpx.post(url + "/admin/keys", headers=bearer(admin), json={"name": name, **limits}, timeout=10)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"])


def bootstrap_admin(store_url: str) -> str:
    from corral.adapters.keystore import KeySpec, SqlKeyStore
    from corral.domain.keys import Role

    async def make() -> str:
        store = SqlKeyStore(store_url)
        try:
            await store.migrate()
            return (await store.create(KeySpec("root", Role.ADMIN), time.time()))[1]
        finally:
            await store.close()

    return asyncio.run(make())


def served(proc: Proc, prefix: str) -> bool:
    return any(str(r.get("request_id", "")).startswith(prefix) for r in log_records(proc.output()))


class Stack:
    """The processes, each restartable on its own port."""

    def __init__(self, folder: Path, pg: Server, redis: Server) -> None:
        self.folder = folder
        self.sim_ports = [free_port() for _ in range(3)]
        self.sims: list[Proc] = []
        self.config: dict[str, Any] = {
            "backends": [
                {"name": f"n{i + 1}", "url": f"http://127.0.0.1:{port}", "parallel": 16}
                for i, port in enumerate(self.sim_ports)
            ],
            # Quick to see a dead node (a refused connection fails at once), slow to believe a live one is
            # dead: on two cores shared with other work, a check can wait a while for its turn.
            "health": {"interval_s": 0.3, "timeout_s": 3, "rise": 1, "fall": 2},
            "auth": {"enabled": True, "store_url": pg.url, "cache_ttl_s": 2, "fleet_poll_s": 1},
            # A generous Redis timeout: on two cores shared with other work, a new connection can take
            # more than the default 0.5 s, and the default policy then admits the request unlimited.
            "limits": {"redis_url": redis.url, "store_timeout_s": 5},
        }
        if WORKERS > 1:
            self.config["server"] = {"workers": WORKERS}
        self.replica_ports = [free_port(), free_port()]
        self.replicas: list[Proc] = []
        self.front: Front | None = None

    def start_sim(self, index: int) -> Proc:
        return start_sim("m:1b", port=self.sim_ports[index], extra=SIM_FLAGS, timeout=60)

    def start_replica(self, index: int) -> Proc:
        config = json.loads(json.dumps(self.config))
        config.setdefault("server", {})["port"] = self.replica_ports[index]
        config["audit"] = {"path": str(self.folder / f"audit-{index}.log")}
        return start_corral(config, timeout=60)

    def start_all(self) -> None:
        # Nodes and replicas together (a replica that starts first sees its nodes come up at the next
        # check): on two shared cores this halves the set-up time.
        starts: list[Callable[[], Proc]] = [
            *(partial(self.start_sim, i) for i in range(3)),
            *(partial(self.start_replica, i) for i in range(2)),
        ]
        with ThreadPoolExecutor(len(starts)) as pool:
            futures = [pool.submit(start) for start in starts]
            wait(futures)
        procs = [f.result() for f in futures if f.exception() is None]
        self.sims, self.replicas = procs[:3], procs[3:]
        for future in futures:
            future.result()  # the first start that failed, raised here (the fixture stops the rest)
        self.start_front()

    def start_front(self) -> None:
        front_folder = self.folder / f"front-{time.monotonic_ns()}"
        front_folder.mkdir()
        # The shipped check timing (every 2 s): a shortened interval is also a shortened check timeout,
        # and on two busy cores a replica then fails checks it would pass, which is not what is tested.
        self.front = start_haproxy(front_folder, self.replica_ports)
        wait_for(lambda: self.states() == {"corral-1": "UP", "corral-2": "UP"}, 20, "both replicas UP in HAProxy")

    def states(self) -> dict[str, str]:
        assert self.front is not None
        return server_states(self.front)

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        for proc in [*self.replicas, *self.sims]:
            proc.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as stack:
        try:
            pg = stack.enter_context(start_postgres())
            redis = stack.enter_context(start_redis())
        except ServerUnavailable as exc:
            pytest.skip(str(exc))
        fleet = Stack(tmp_path, pg, redis)
        stack.callback(fleet.stop)
        fleet.admin = bootstrap_admin(pg.url)  # type: ignore[attr-defined]
        fleet.start_all()
        yield fleet


def limit_holds(stack: Stack, admin: str, name: str, rpm: int, spread: bool) -> dict[str, int]:
    """A fresh key allowed `rpm` requests a minute, `3 * rpm` sent at once through the front: exactly
    `rpm` are admitted, whichever replicas they land on."""
    assert stack.front is not None
    key = create_key(stack.replicas[0].url, admin, name, rpm=rpm)
    with ThreadPoolExecutor(3 * rpm) as pool:
        replies = list(pool.map(lambda i: generate(stack.front.http, key, f"{name}-{i}"), range(3 * rpm)))  # type: ignore[union-attr]
    codes = [r.status_code for r in replies]
    assert codes.count(200) == rpm and codes.count(429) == 2 * rpm, [(r.status_code, r.text[:120]) for r in replies]
    if spread:
        wait_for(lambda: all(served(r, f"{name}-") for r in stack.replicas), 10, "the burst's access lines")
    return {"admitted": codes.count(200), "refused": codes.count(429)}


def in_flight_at(outcome: Outcome, before: float, after: float) -> bool:
    """Started before the kill instant and ended after it."""
    return outcome.start <= after and outcome.end >= before


def test_failover_under_load(stack: Stack) -> None:
    admin: str = stack.admin  # type: ignore[attr-defined]
    assert stack.front is not None
    front = stack.front.http
    one, two = stack.replicas
    report: dict[str, Any] = {"workers_per_replica": WORKERS}
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        phases[name] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()

    load = Load(front, create_key(one.url, admin, "load"))
    load.start()
    try:
        wait_for(lambda: load.count() >= 20, 20, "the load under way")
        # Limits, with both replicas serving: exact across them.
        report["limit_both_replicas"] = limit_holds(stack, admin, "limit-a", 6, spread=True)

        phase("load_and_limits")
        # 1. SIGKILL a replica in the middle of the load.
        wait_for(lambda: in_flight(one.url, admin) > 0, 10, "work in flight on replica 1")
        killed_before = time.time()
        one.stop(sig_kill=True)
        killed_after = time.time()

        # 2. Drain a node through the survivor; once its last request there is done, the node's own
        # count is the baseline no later request may move.
        drained = httpx.post(two.url + "/admin/backends/n1/drain", headers=bearer(admin), timeout=5)
        assert drained.status_code == 200 and drained.json()["state"] == "draining"
        wait_for(lambda: in_flight(two.url, admin, "n1") == 0, 20, "the drained node's last request on replica 2")
        n1_requests = sim_stats(stack.sims[0])["requests"].get("/api/generate", 0)

        phase("kill_and_drain")
        # 3. Restart the killed replica on its port: it starts from the stored state (n1 drained) and
        # HAProxy gives it traffic again.
        sent_before_restart = load.count()
        one = stack.replicas[0] = stack.start_replica(0)
        assert backends(one.url, admin)["n1"] == "draining", "the restarted replica honours the drain at once"
        wait_for(lambda: stack.states().get("corral-1") == "UP", 20, "HAProxy to mark the restarted replica UP")
        restarted_at = time.monotonic()
        wait_for(lambda: served(one, "load-"), 20, "load traffic on the restarted replica")
        report["restarted_replica_first_load_request_s"] = round(time.monotonic() - restarted_at, 2)
        wait_for(lambda: load.count() >= sent_before_restart + 30, 30, "more load through both replicas")
        assert sim_stats(stack.sims[0])["requests"].get("/api/generate", 0) == n1_requests, "no request reached n1"

        phase("replica_restart")
        # 4. Kill a node (SIGKILL): whole requests it held are retried elsewhere, streams end with an error.
        node_killed_at = time.time()
        stack.sims[1].stop(sig_kill=True)
        for replica in (one, two):
            wait_for(lambda r=replica: backends(r.url, admin)["n2"] == "down", 10, "the dead node marked down")
        sent = load.count()
        wait_for(lambda: load.count() >= sent + 20, 30, "load carried by the last node")

        phase("node_kill")
        # 5. Revoke a key on one replica; the other refuses it within 5 s (its key cache's TTL).
        doomed = create_key(two.url, admin, "doomed")
        assert generate(one.url, doomed, "doomed-warm").status_code == 200  # cached as valid on replica 1
        assert httpx.delete(two.url + "/admin/keys/doomed", headers=bearer(admin), timeout=5).status_code == 200
        revoked_at = time.monotonic()
        wait_for(lambda: generate(one.url, doomed, "doomed").status_code == 401, 5, "the revocation on replica 1")
        report["revoke_reaches_other_replica_s"] = round(time.monotonic() - revoked_at, 2)

        # 6. Drain (the dead node, so the load keeps its capacity) and undrain through the restarted
        # replica: how long until the other follows.
        for node, action, state in (("n2", "drain", "draining"), ("n1", "undrain", "up"), ("n2", "undrain", "down")):
            url = f"{one.url}/admin/backends/{node}/{action}"
            assert httpx.post(url, headers=bearer(admin), timeout=5).status_code == 200
            changed_at = time.monotonic()
            what = f"the {action} of {node} on replica 2"
            wait_for(lambda n=node, s=state: backends(two.url, admin)[n] == s, 5, what)
            report[f"{action}_{node}_reaches_other_replica_s"] = round(time.monotonic() - changed_at, 2)

        phase("revoke_and_undrain")
        # Limits again, the restarted replica back in.
        report["limit_after_restart"] = limit_holds(stack, admin, "limit-b", 6, spread=False)
        phase("limits_again")
    finally:
        load.stop()

    outcomes = list(load.outcomes)
    report["load"] = summary(outcomes)
    # Every failure of a whole request was in flight on the killed replica at the instant it died:
    # it started before the kill and ended after it, and the surviving replica never saw it.
    failed_whole = [o for o in outcomes if not o.stream and o.result != "ok"]
    for o in failed_whole:
        assert in_flight_at(o, killed_before, killed_after), o
        assert not any(r.get("request_id") == o.request_id for r in log_records(two.output())), o
    failed_streams = [o for o in outcomes if o.stream and o.result == "failed"]
    for o in failed_streams:
        assert in_flight_at(o, killed_before, killed_after), o
    report["whole_failed_in_flight_at_kill"] = len(failed_whole)
    cut = [o for o in outcomes if o.result == "cut"]
    report["streams_cut_at_replica_kill"] = sum(in_flight_at(o, killed_before, killed_after) for o in cut)
    report["streams_cut_at_node_kill"] = sum(in_flight_at(o, node_killed_at, node_killed_at + 1) for o in cut)

    # 7. Restart everything: the dead node, both replicas (from the stored state) and the front.
    stack.front.stop()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: p.stop(), stack.replicas))
        sim = pool.submit(stack.start_sim, 1)
        stack.replicas = list(pool.map(stack.start_replica, range(2)))
        stack.sims[1] = sim.result()
    stack.start_front()
    for replica in stack.replicas:
        wait_for(lambda r=replica: backends(r.url, admin) == {"n1": "up", "n2": "up", "n3": "up"}, 10, "all up")
    key = create_key(stack.replicas[1].url, admin, "after")
    codes = [generate(stack.front.http, key, f"after-{i}").status_code for i in range(10)]
    assert codes == [200] * 10, codes
    phase("restart_everything")
    report["phases_s"] = phases
    print("\nHA report:", json.dumps(report, indent=2))
