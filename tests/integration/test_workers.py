"""`corral serve --workers N` against real processes: the port served by every worker, a dead worker
replaced, a graceful drain, one scrape for the whole replica, limits that stay exact, shared probes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from procs import Proc, log_records, sim_stats, start_corral, start_sim, wait_for
from tests.contract.servers import ServerUnavailable, start_redis

FAST = ["--tokens-per-second", "2000", "--load-seconds", "0", "--parallel", "8"]


@pytest.fixture
def sim() -> Iterator[Proc]:
    proc = start_sim("m:1b", extra=FAST)
    yield proc
    proc.stop()


def workers_config(sim: Proc, workers: int = 2, **extra: Any) -> dict[str, Any]:
    return {"server": {"workers": workers}, "backends": [{"name": "n", "url": sim.url, "parallel": 8}], **extra}


def lines(proc: Proc) -> list[dict[str, Any]]:
    return log_records(proc.output())


def worker_pids(proc: Proc) -> dict[int, int]:
    """The latest pid of each worker slot, from the parent's "worker k started (pid N)" lines."""
    pids: dict[int, int] = {}
    for line in lines(proc):
        msg = str(line.get("msg", ""))
        if msg.startswith("worker ") and " started (pid " in msg:
            pids[int(msg.split()[1])] = int(msg.rsplit(" ", 1)[1].rstrip(")"))
    return pids


def served_by(proc: Proc, route: str) -> dict[int, int]:
    """Access lines per worker pid for `route`."""
    counts: dict[int, int] = {}
    for line in lines(proc):
        if line.get("logger") == "corral.access" and line.get("route") == route:
            counts[int(line["pid"])] = counts.get(int(line["pid"]), 0) + 1
    return counts


def generate(url: str, stream: bool = False, tokens: int = 3, timeout: float = 20) -> httpx.Response:
    # A fresh connection each time, so that the kernel spreads them over the workers' sockets.
    return httpx.post(
        url + "/api/generate",
        json={"model": "m:1b", "prompt": "hi", "stream": stream, "options": {"num_predict": tokens}},
        headers={"Connection": "close"},
        timeout=timeout,
    )


def scrape_sum(url: str, name: str, **labels: str) -> float:
    total = 0.0
    text = httpx.get(url + "/metrics", timeout=10).text
    for row in text.splitlines():
        if not row.startswith(name + "{"):
            continue
        head, value = row.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_both_workers_serve_and_one_scrape_sums_them(sim: Proc) -> None:
    corral = start_corral(workers_config(sim))
    try:
        wait_for(lambda: len(worker_pids(corral)) == 2, 15, "two workers")
        for _ in range(40):
            assert generate(corral.url).status_code == 200
        served = wait_for(lambda: (c := served_by(corral, "/api/generate")) and sum(c.values()) == 40 and c, 10)
        assert set(served) == set(worker_pids(corral).values()), served  # both worker processes answered
        assert all(n > 0 for n in served.values())
        # One scrape, whichever worker answers it, counts every request of the replica, once.
        for _ in range(4):
            assert scrape_sum(corral.url, "corral_requests_total", route="/api/generate") == 40
        text = httpx.get(corral.url + "/metrics", timeout=10).text
        assert text.count('corral_node_up{node="n"}') == 1
        assert scrape_sum(corral.url, "corral_request_duration_seconds_count", route="/api/generate") == 40

        # The console too shows the replica's traffic, not the part of it the answering worker served.
        def console_requests() -> float:
            doc = httpx.get(corral.url + "/ui/api/traffic?window=900&step=1", headers={"Connection": "close"}).json()
            return round(sum(doc["requests_s"]))

        wait_for(lambda: console_requests() == 40, 10, "the console's count of the last complete seconds")
        assert all(console_requests() == 40 for _ in range(6))
        for _ in range(4):
            overview = httpx.get(corral.url + "/ui/api/overview", headers={"Connection": "close"}).json()
            assert [m["recent"] for m in overview["models"] if m["name"] == "m:1b"] == [{"n": 40}], overview
    finally:
        corral.stop()
    assert corral.proc.returncode == 0


def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(sim: Proc) -> None:
    corral = start_corral(workers_config(sim))
    try:
        pids = wait_for(lambda: (p := worker_pids(corral)) and len(p) == 2 and p, 15, "two workers")
        os.kill(pids[1], signal.SIGKILL)
        codes = [generate(corral.url).status_code for _ in range(20)]  # some wait for the replacement
        assert codes == [200] * 20
        fresh = wait_for(lambda: (p := worker_pids(corral)) and p[1] != pids[1] and p, 15, "a new worker 1")
        assert fresh[0] == pids[0]
        assert any(f"worker 1 (pid {pids[1]}) died" in str(line.get("msg")) for line in lines(corral))
        for _ in range(20):
            assert generate(corral.url).status_code == 200
        assert fresh[1] in served_by(corral, "/api/generate")  # the replacement takes its share
    finally:
        corral.stop()


def test_sigterm_drains_an_inflight_stream_to_its_end() -> None:
    slow = start_sim("m:1b", extra=["--tokens-per-second", "20", "--load-seconds", "0"])
    corral = start_corral(workers_config(slow, server={"workers": 2, "shutdown_grace_s": 20}))
    try:
        wait_for(lambda: len(worker_pids(corral)) == 2, 15, "two workers")
        body = {"model": "m:1b", "prompt": "hi", "options": {"num_predict": 30}}
        # Kept-alive connections, as a load balancer holds; spread over both workers by the kernel.
        probes = [httpx.Client(timeout=10) for _ in range(8)]
        with httpx.stream("POST", corral.url + "/api/generate", json=body, timeout=30) as reply:
            assert all(p.get(corral.url + "/ready").status_code == 200 for p in probes)
            chunks = reply.iter_lines()
            first = json.loads(next(chunks))
            assert first["done"] is False
            corral.proc.send_signal(signal.SIGTERM)  # to the parent: it tells every worker to drain
            # The replica drains as one: a worker with nothing in flight keeps answering /ready with
            # 503 on its kept-alive connections while its sibling finishes the stream.
            for probe in probes:
                wait_for(lambda p=probe: p.get(corral.url + "/ready").status_code == 503, 10, "/ready 503")
            rest = [json.loads(line) for line in chunks if line]
        for probe in probes:
            probe.close()
        assert rest[-1]["done"] is True and rest[-1]["eval_count"] == 30
        assert corral.proc.wait(20) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(corral.url + "/health", timeout=2)
    finally:
        corral.stop()
        slow.stop()


def run_serve(config: dict[str, Any], tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp / "corral.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "corral", "serve", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_limits_in_memory_with_several_workers_refuse_to_start(tmp_path: Path) -> None:
    config = {"server": {"port": 0}, "limits": {"per_ip_rpm": 10}}
    done = run_serve(config, tmp_path, "--workers", "2")
    assert done.returncode == 2
    assert "limits.redis_url" in done.stderr and "limits.per_ip_rpm" in done.stderr
    keys = {"server": {"workers": 3, "port": 0}, "auth": {"enabled": True, "store_url": f"sqlite:///{tmp_path}/k.db"}}
    done = run_serve(keys, tmp_path)
    assert done.returncode == 2 and "limits.redis_url" in done.stderr and "API keys" in done.stderr


def test_per_ip_rate_limit_is_exact_across_workers_with_redis(sim: Proc) -> None:
    try:
        redis_cm = start_redis()
        redis = redis_cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    corral = start_corral(workers_config(sim, limits={"redis_url": redis.url, "per_ip_rpm": 12}))
    try:
        wait_for(lambda: len(worker_pids(corral)) == 2, 15, "two workers")
        codes = [generate(corral.url).status_code for _ in range(30)]
        assert codes.count(200) == 12 and codes.count(429) == 18, codes
        assert len(served_by(corral, "/api/generate")) == 2  # the 30 went through both workers
    finally:
        corral.stop()
        redis_cm.__exit__(None, None, None)


def test_sighup_reloads_only_a_valid_configuration(sim: Proc) -> None:
    corral = start_corral(workers_config(sim))
    path: Path = corral.config_path  # type: ignore[attr-defined]
    try:
        pids = wait_for(lambda: (p := worker_pids(corral)) and len(p) == 2 and p, 15, "two workers")

        def reloads() -> set[int]:
            return {int(x["pid"]) for x in lines(corral) if str(x.get("msg")).startswith("configuration reloaded")}

        original = path.read_text()
        path.write_text(original + "\nnot_a_section: 1\n")
        corral.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any("reload refused" in str(x.get("msg")) for x in lines(corral)), 10, "a refusal")
        assert reloads() == set()
        assert any("not_a_section" in str(x.get("msg")) for x in lines(corral))
        path.write_text(original)
        corral.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads() == set(pids.values()), 10, "both workers told to reload")
        assert worker_pids(corral) == pids  # a reload restarts no one
        assert generate(corral.url).status_code == 200
    finally:
        corral.stop()


def test_workers_share_health_probes_instead_of_multiplying_them(sim: Proc) -> None:
    interval = 0.25
    corral = start_corral(workers_config(sim, health={"interval_s": interval}))
    try:
        wait_for(lambda: len(worker_pids(corral)) == 2, 15, "two workers")

        def probes() -> int:
            return int(sim_stats(sim)["requests"].get("/api/version", 0))

        wait_for(lambda: probes() >= 4, 15, "probes running")
        start, began = probes(), time.monotonic()
        wait_for(lambda: probes() >= start + 12, 30, "12 more probes")
        elapsed = time.monotonic() - began
        # One probe per interval for the replica: 12 take about 12 intervals. Two workers probing on
        # their own would take half that.
        assert elapsed > 12 * interval * 0.8, elapsed
        # Every worker applied every result: each scrape, whichever worker answers, sees the node up.
        for _ in range(4):
            assert scrape_sum(corral.url, "corral_node_up", node="n") == 1
    finally:
        corral.stop()


def test_port_zero_is_picked_once_and_shared_by_the_workers(tmp_path: Path, sim: Proc) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(yaml.safe_dump({"server": {"port": 0}, "backends": [{"name": "n", "url": sim.url}]}))
    proc = Proc([sys.executable, "-m", "corral", "serve", "--config", str(path), "--workers", "2"], 0)
    try:

        def port() -> int:
            for line in proc.output().splitlines():
                if "corral parent" in line and " workers on 127.0.0.1:" in line:
                    return int(line.split("127.0.0.1:")[1].split('"')[0].split()[0])
            return 0

        chosen = wait_for(port, 20, "the parent's port")
        wait_for(lambda: len(worker_pids(proc)) == 2, 15, "two workers")
        url = f"http://127.0.0.1:{chosen}"
        wait_for(lambda: generate(url).status_code == 200, 15, "an answer on the chosen port")

        def listening_lines() -> list[dict[str, Any]]:
            return [x for x in lines(proc) if str(x.get("msg", "")).startswith("corral listening on")]

        want = set(worker_pids(proc).values())
        wait_for(lambda: {x["pid"] for x in listening_lines()} == want, 15, "both listening")
        listening = listening_lines()
        assert all(f"127.0.0.1:{chosen} " in x["msg"] for x in listening)
    finally:
        proc.stop()


def test_admin_changes_answer_once_every_worker_applied_them(tmp_path: Path) -> None:
    """A drain, a reload and a refused reload through whichever worker takes the call: the next
    requests, whichever worker takes each, all see the result, and every worker reports one version."""
    one, two = start_sim("m:1b", extra=FAST), start_sim("m:1b", extra=FAST)
    config = {
        "server": {"workers": 2},
        "backends": [{"name": "one", "url": one.url, "parallel": 8}, {"name": "two", "url": two.url, "parallel": 8}],
        "auth": {"store_url": f"sqlite:///{tmp_path / 'fleet.db'}"},
        "logging": {"access": True},
    }
    corral = start_corral(config)
    path: Path = corral.config_path  # type: ignore[attr-defined]
    try:
        wait_for(lambda: len(worker_pids(corral)) == 2, 15, "two workers")
        assert httpx.post(corral.url + "/admin/backends/one/drain", timeout=10).status_code == 200
        before = sim_stats(one)["requests"].get("/api/generate", 0)
        assert all(generate(corral.url).status_code == 200 for _ in range(20))
        assert sim_stats(one)["requests"].get("/api/generate", 0) == before  # no worker sent it one
        assert len(served_by(corral, "/api/generate")) == 2  # and both workers served

        doc = yaml.safe_load(path.read_text())
        doc["validation"] = {"max_predict": 8}
        path.write_text(yaml.safe_dump(doc))
        reply = httpx.post(corral.url + "/admin/reload", timeout=30)
        assert reply.status_code == 200 and reply.json()["changed"] == ["validation.max_predict"], reply.text
        version = reply.json()["version"]["hash"]
        statuses = [
            httpx.get(corral.url + "/internal/status", headers={"Connection": "close"}).json() for _ in range(12)
        ]
        assert {s["config"]["hash"] for s in statuses} == {version}
        assert all(generate(corral.url, tokens=9).status_code == 400 for _ in range(12))  # the new cap, everywhere

        doc["queue"] = {"max_len": -1}
        path.write_text(yaml.safe_dump(doc))
        refused = httpx.post(corral.url + "/admin/reload", timeout=30)
        assert refused.status_code == 422 and refused.json()["problems"][0]["key"] == "queue.max_len"
        statuses = [
            httpx.get(corral.url + "/internal/status", headers={"Connection": "close"}).json() for _ in range(12)
        ]
        assert all(s["config"]["last_reload"]["result"] == "error" for s in statuses)
        assert {s["config"]["hash"] for s in statuses} == {version}
        assert len(served_by(corral, "/internal/status")) == 2

        # A node added at run time is shared out like a YAML node: its cap holds for the replica.
        added = {"name": "three", "url": two.url, "parallel": 5, "max_concurrency": 6}
        assert httpx.post(corral.url + "/admin/backends", json=added, timeout=10).status_code in (200, 201)
        for status in (httpx.get(corral.url + "/internal/status", headers={"Connection": "close"}) for _ in range(6)):
            three = next(n for n in status.json()["nodes"] if n["name"] == "three")
            assert three["max_concurrency"] == 6  # 3 + 3, not 6 in each worker
    finally:
        corral.stop()
        one.stop()
        two.stop()
