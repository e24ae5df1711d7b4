"""Node discovery against real processes: a real DNS server (Debian's dnsmasq on a loopback port) whose
records the test changes, and a watched node file. Nodes that appear are checked, then take traffic;
nodes that disappear are drained (their requests finish), then removed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from procs import Proc, free_port, sim_stats, single_process, start_corral, start_sim, wait_for

pytestmark = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (scripts/install.sh --system)")

FAST = ["--tokens-per-second", "400", "--load-seconds", "0.05"]
HEALTH = {"interval_s": 0.2, "timeout_s": 1, "rise": 1, "fall": 2}


class Dnsmasq:
    """dnsmasq in the foreground on 127.0.0.1:PORT: A records from a hosts file (re-read on SIGHUP), SRV
    records from the command line (a restart changes them). Answers for *.test only, from its own data."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.hosts = folder / "hosts"
        self.hosts.write_text("")
        self.log = folder / "dnsmasq.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        args = [
            "dnsmasq",
            "--no-daemon",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",
            f"--addn-hosts={self.hosts}",
            *extra,
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: b"started" in self.log.read_bytes(), 10, "dnsmasq to start")

    def set_hosts(self, lines: list[str]) -> None:
        reads = self.log.read_bytes().count(b"read " + str(self.hosts).encode())
        self.hosts.write_text("".join(line + "\n" for line in lines))
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.log.read_bytes().count(b"read " + str(self.hosts).encode()) > reads, 10, "the re-read")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path)
    yield server
    server.stop()


def sim_on(address: str, port: int, *extra: str) -> Proc:
    """A simulated node on another loopback address (127.0.0.0/8 is all loopback)."""
    args = [sys.executable, "-m", "corral", "sim", "--host", address, "--port", str(port), "--model", "m:1b", *extra]
    proc = Proc(args, port)
    proc.url = f"http://{address}:{port}"
    wait_for(lambda: httpx.get(proc.url + "/", timeout=1).status_code == 200, 15, f"sim on {proc.url}")
    return proc


def nodes(corral: Proc) -> dict[str, str]:
    data: dict[str, Any] = httpx.get(corral.url + "/internal/status", timeout=5).json()
    return {n["name"]: n["state"] for n in data["nodes"]}


def generate(corral: Proc, tokens: int = 4) -> httpx.Response:
    body = {"model": "m:1b", "prompt": "hi", "stream": False, "options": {"num_predict": tokens}}
    return httpx.post(corral.url + "/api/generate", json=body, timeout=30)


def served(sim: Proc) -> int:
    return int(sim_stats(sim)["requests"].get("/api/generate", 0))


@single_process("it counts on round-robin turns, which are per worker (the slow request's node)")
def test_dns_address_records_become_nodes_and_drain_when_removed(dnsmasq: Dnsmasq) -> None:
    port = free_port()
    two = sim_on("127.0.0.2", port, "--tokens-per-second", "20", "--load-seconds", "0.05")
    three = sim_on("127.0.0.3", port, *FAST)
    dnsmasq.hosts.write_text("127.0.0.2 fleet.test\n")
    dnsmasq.start()
    service = {"name": "fleet.test", "port": port, "max_concurrency": 4}
    dns = {"nameserver": "127.0.0.1", "port": dnsmasq.port, "interval_s": 0.3, "min_interval_s": 0.2}
    corral = start_corral(
        {
            "discovery": {"dns": {**dns, "services": [service]}},
            "health": HEALTH,
            "routing": {"strategy": "round-robin"},
        }
    )
    first, second = f"dns:127.0.0.2:{port}", f"dns:127.0.0.3:{port}"
    try:
        wait_for(lambda: nodes(corral) == {first: "up"}, 15, "the first record's node")
        reply = generate(corral)
        assert reply.status_code == 200 and reply.headers["x-corral-node"] == first
        status = httpx.get(corral.url + "/internal/status", timeout=5).json()
        assert next(n for n in status["nodes"] if n["name"] == first)["max_concurrency"] == 4  # the source's default

        dnsmasq.set_hosts(["127.0.0.2 fleet.test", "127.0.0.3 fleet.test"])
        wait_for(lambda: nodes(corral) == {first: "up", second: "up"}, 15, "the added record's node")
        for _ in range(4):
            assert generate(corral).status_code == 200
        assert served(three) >= 2

        # A slow stream on the first node, then its record goes: it drains, the stream ends whole.
        answers: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answers.append(generate(corral, tokens=100)))  # 5 s
        before = served(two)
        slow.start()
        wait_for(lambda: served(two) > before, 10, "the slow request on the first node")
        dnsmasq.set_hosts(["127.0.0.3 fleet.test"])
        wait_for(lambda: nodes(corral).get(first) == "draining", 10, "the first node to drain")
        assert slow.is_alive()  # the drain waits for it
        for _ in range(4):
            reply = generate(corral)
            assert reply.status_code == 200 and reply.headers["x-corral-node"] == second
        slow.join(30)
        assert answers[0].status_code == 200 and answers[0].json()["done"] is True
        assert answers[0].headers["x-corral-node"] == first
        wait_for(lambda: nodes(corral) == {second: "up"}, 10, "the drained node to leave")
    finally:
        for proc in (corral, two, three):
            proc.stop()


def test_dns_srv_records_and_a_resolver_outage(dnsmasq: Dnsmasq) -> None:
    a = start_sim("m:1b", extra=FAST)
    b = start_sim("m:1b", extra=FAST)
    hosts = ["--host-record=n1.fleet.test,127.0.0.1", "--host-record=n2.fleet.test,127.0.0.1"]
    dnsmasq.start(*hosts, f"--srv-host=_ollama._tcp.fleet.test,n1.fleet.test,{a.port}")
    service = {"name": "_ollama._tcp.fleet.test", "record": "SRV"}
    dns = {"nameserver": "127.0.0.1", "port": dnsmasq.port, "interval_s": 0.3, "min_interval_s": 0.2}
    corral = start_corral({"discovery": {"dns": {**dns, "timeout_s": 0.5, "services": [service]}}, "health": HEALTH})
    node_a, node_b = f"dns:n1.fleet.test:{a.port}", f"dns:n2.fleet.test:{b.port}"
    try:
        wait_for(lambda: nodes(corral) == {node_a: "up"}, 15, "the SRV target's node")
        assert generate(corral).headers["x-corral-node"] == node_a

        # The resolver goes away: the nodes stay (a DNS outage must not empty the fleet).
        dnsmasq.stop()
        wait_for(lambda: "resolving _ollama._tcp.fleet.test failed" in corral.output(), 10, "a failed resolution")
        assert nodes(corral) == {node_a: "up"} and generate(corral).status_code == 200

        dnsmasq.start(*hosts, f"--srv-host=_ollama._tcp.fleet.test,n2.fleet.test,{b.port}")
        wait_for(lambda: nodes(corral) == {node_b: "up"}, 15, "the new SRV target to replace the old")
        reply = generate(corral)
        assert reply.status_code == 200 and reply.headers["x-corral-node"] == node_b
    finally:
        for proc in (corral, a, b):
            proc.stop()


def test_a_watched_node_file(tmp_path: Path) -> None:
    a = start_sim("m:1b", extra=FAST)
    b = start_sim("m:1b", extra=FAST)
    listing = tmp_path / "nodes.json"

    def write(doc: object) -> None:
        tmp = listing.with_suffix(".tmp")
        tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        os.replace(tmp, listing)

    write([a.url])
    corral = start_corral(
        {"discovery": {"files": [{"path": str(listing), "interval_s": 0.2, "priority": 3}]}, "health": HEALTH}
    )
    node_a, node_b = f"file:127.0.0.1:{a.port}", "gpu-b"
    try:
        wait_for(lambda: nodes(corral) == {node_a: "up"}, 15, "the listed node")
        assert generate(corral).headers["x-corral-node"] == node_a

        write([{"url": b.url, "name": "gpu-b"}])
        wait_for(lambda: nodes(corral) == {node_b: "up"}, 15, "the file's new node, the old one gone")
        before = served(a)
        for _ in range(3):
            assert generate(corral).headers["x-corral-node"] == node_b
        assert served(a) == before

        write('[{"url": "ftp://nowhere"}]')  # invalid: the nodes stay as they are
        wait_for(lambda: "is invalid" in corral.output(), 10, "the invalid file to be seen")
        assert nodes(corral) == {node_b: "up"} and generate(corral).status_code == 200
    finally:
        for proc in (corral, a, b):
            proc.stop()
