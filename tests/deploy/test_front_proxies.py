"""The front proxies' configurations: `haproxy -c` and `nginx -t` accept them and refuse broken copies,
and, run for real in front of real Corral replicas, they do what their comments promise: only ready
replicas get traffic (HAProxy's checks ask /ready), tokens stream through unbuffered, TLS terminates
with the certificate make-cert.py writes, a request that could not reach a replica goes to another,
and a generation cut by a dying replica is never replayed.

The copies the tests run differ from the shipped files only where a loopback test must: listen and
replica addresses become 127.0.0.1 ports, file paths go to a temporary folder, HAProxy's maxconn fits
this machine's file-descriptor limit, and (where a test waits for a check) HAProxy's check interval is
shortened. `sub` fails if the shipped file no longer holds the text being replaced."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from procs import Proc, free_port, log_records, start_corral, start_sim, wait_for
from tests.deploy.tools import COMPOSE, DEPLOY, run, tool

HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"


def sub(text: str, old: str, new: str) -> str:
    assert old in text, f"the shipped file no longer holds {old!r}"
    return text.replace(old, new)


def make_cert(folder: Path) -> Path:
    result = run(sys.executable, str(COMPOSE / "make-cert.py"), str(folder), "localhost")
    assert result.returncode == 0, result.stderr
    return folder


def trust(certs: Path) -> ssl.SSLContext:
    """A client that trusts exactly the certificate make-cert.py wrote (and checks the host name)."""
    return ssl.create_default_context(cafile=str(certs / "corral.crt"))


@dataclass
class Front:
    proc: subprocess.Popen[bytes]
    log: Path
    http: str
    https: str
    stats: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Fleet:
    """A node and two replicas in front of it; an unready replica (its only node never answers, so
    /ready is 503 while /health is 200); and a doomed replica whose node takes 1.5 s to its first byte."""

    sim: Proc
    a: Proc
    b: Proc
    unready: Proc
    slow_node: Proc
    doomed: Proc


def corral_for(node_url: str) -> Proc:
    health = {"interval_s": 0.3, "rise": 1, "fall": 1}
    config = {"backends": [{"name": "n", "url": node_url, "parallel": 8}], "health": health}
    return start_corral(config, timeout=60)  # generous: six processes start at once on two shared cores


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    # Started together (each waits for its own readiness): on two cores this halves the set-up time.
    node, slow = free_port(), free_port()
    node_url, slow_url = f"http://127.0.0.1:{node}", f"http://127.0.0.1:{slow}"
    starts: list[Callable[[], Proc]] = [
        lambda: start_sim(
            "m:1b",
            port=node,
            extra=["--tokens-per-second", "25", "--load-seconds", "0.05", "--parallel", "8"],
            timeout=60,
        ),
        lambda: corral_for(node_url),
        lambda: corral_for(node_url),
        lambda: corral_for(f"http://127.0.0.1:{free_port()}"),
        lambda: start_sim("m:1b", port=slow, extra=["--latency-ms", "1500", "--load-seconds", "0.05"], timeout=60),
        lambda: corral_for(slow_url),
    ]
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = [pool.submit(start) for start in starts]
        wait(futures)
    procs = [f.result() for f in futures if f.exception() is None]
    try:
        for future in futures:
            future.result()  # the first start that failed, raised here (the others are stopped below)
        yield Fleet(*procs)
    finally:
        for proc in procs:
            proc.stop()


def haproxy_copy(folder: Path, replicas: list[int] | None, fast_checks: bool = False) -> tuple[Path, dict[str, int]]:
    ports = {"http": free_port(), "https": free_port(), "stats": free_port()}
    text = HAPROXY_CFG.read_text()
    text = sub(text, "bind :80\n", f"bind 127.0.0.1:{ports['http']}\n")
    text = sub(
        text, "bind :443 ssl crt /etc/haproxy/certs/", f"bind 127.0.0.1:{ports['https']} ssl crt {folder}/certs/"
    )
    text = sub(text, "bind :8404\n", f"bind 127.0.0.1:{ports['stats']}\n")
    text = sub(text, "maxconn 20000", "maxconn 2000")
    for i, port in enumerate(replicas or [], 1):
        text = sub(text, f"corral-{i}:8080", f"127.0.0.1:{port}")
    if fast_checks:
        text = sub(text, "check inter 2s", "check inter 200ms")
    make_cert(folder / "certs")
    path = folder / "haproxy.cfg"
    path.write_text(text)
    return path, ports


def start_haproxy(folder: Path, replicas: list[int], fast_checks: bool = False) -> Front:
    path, ports = haproxy_copy(folder, replicas, fast_checks)
    log = folder / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [tool("haproxy", "Debian haproxy"), "-f", str(path), "-db"], stdout=out, stderr=subprocess.STDOUT
        )
    front = Front(
        proc,
        log,
        f"http://127.0.0.1:{ports['http']}",
        f"https://127.0.0.1:{ports['https']}",
        f"http://127.0.0.1:{ports['stats']}",
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        return httpx.get(front.stats + "/healthz", timeout=1).status_code == 200

    wait_for(up, 10, "haproxy")
    return front


def server_states(front: Front) -> dict[str, str]:
    """HAProxy's view of each replica, from its own Prometheus endpoint."""
    text = httpx.get(front.stats + "/metrics", timeout=5).text
    found = re.findall(r'^haproxy_server_status\{proxy="corral",server="([^"]+)",state="([A-Z]+)"\} 1$', text, re.M)
    return dict(found)


def chat(url: str, request_id: str, num_predict: int = 12, **kwargs: Any) -> httpx.Response:
    body = {
        "model": "m:1b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"num_predict": num_predict},
    }
    return httpx.post(url + "/api/chat", json=body, headers={"x-request-id": request_id}, timeout=30, **kwargs)


def stream_timing(url: str, **kwargs: Any) -> tuple[float, float]:
    """Seconds to the first streamed line and to the last, through the front."""
    body = {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 15}}
    started = time.monotonic()
    first = 0.0
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=30, **kwargs) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line and not first:
                first = time.monotonic() - started
            last = orjson.loads(line) if line else None
    assert last is not None and last["done"] is True
    return first, time.monotonic() - started


def served_by(proc: Proc, request_id: str) -> bool:
    return any(r.get("request_id") == request_id for r in log_records(proc.output()))


def wait_served(proc: Proc, ids: list[str]) -> None:
    """The access line is written as the request ends, a moment after the client has its answer."""
    wait_for(lambda: all(served_by(proc, i) for i in ids), 10, f"access lines for {ids}")


def in_flight(proc: Proc) -> int:
    nodes = httpx.get(proc.url + "/internal/status", timeout=5).json()["nodes"]
    return int(sum(n["in_flight"] for n in nodes))


def test_haproxy_check_accepts_the_shipped_config(tmp_path: Path) -> None:
    path, _ = haproxy_copy(tmp_path, None)  # the shipped replica names: they need not resolve at start
    result = run(tool("haproxy", "Debian haproxy"), "-c", "-f", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if "[WARNING]" in line or "[ALERT]" in line]
    assert warnings and all("could not resolve address 'corral-" in w for w in warnings), warnings


def test_haproxy_check_rejects_a_broken_copy(tmp_path: Path) -> None:
    path, _ = haproxy_copy(tmp_path, None)
    path.write_text(sub(path.read_text(), "retry-on conn-failure", "retry-on conn-failures"))
    result = run(tool("haproxy", "Debian haproxy"), "-c", "-f", str(path))
    assert result.returncode != 0 and "conn-failures" in result.stderr


def test_haproxy_sends_traffic_only_to_ready_replicas_streams_and_terminates_tls(fleet: Fleet, tmp_path: Path) -> None:
    # A replica whose only node is down answers 503 on /ready (and 200 on /health): it must get nothing.
    unready = fleet.unready
    front = start_haproxy(tmp_path, [fleet.a.port, unready.port], fast_checks=True)
    try:
        wait_for(lambda: server_states(front) == {"corral-1": "UP", "corral-2": "DOWN"}, 10, "the unready replica DOWN")
        ids = [f"ready-{i}" for i in range(6)]
        for request_id in ids:
            assert chat(front.http, request_id, num_predict=1).status_code == 200
        wait_served(fleet.a, ids)
        assert not any(served_by(unready, i) for i in ids)
        # Tokens are relayed as they come: the first line arrives long before the last (15 at 25/s).
        first, total = stream_timing(front.http)
        assert total - first > 0.3, (first, total)
        # TLS, verified against the certificate make-cert.py wrote.
        response = httpx.get(front.https + "/api/tags", verify=trust(tmp_path / "certs"), timeout=10)
        assert response.status_code == 200 and response.json()["models"][0]["name"] == "m:1b"
        first, total = stream_timing(front.https, verify=trust(tmp_path / "certs"))
        assert total - first > 0.3, (first, total)
    finally:
        front.stop()


def test_haproxy_resends_only_requests_that_never_reached_a_replica(fleet: Fleet, tmp_path: Path) -> None:
    # The doomed replica's node takes 1.5 s to its first byte: a generation is under way there, with
    # nothing sent back yet, when the replica dies. That is exactly the request a proxy must not
    # replay (with `retry-on empty-response` or `all-retryable-errors` HAProxy would).
    doomed = fleet.doomed
    # The shipped check interval (2 s, fall 2): the dead replica stays "UP" for a while, so requests
    # really meet a refused connection and must be redispatched.
    front = start_haproxy(tmp_path, [doomed.port, fleet.b.port])
    try:
        assert server_states(front) == {"corral-1": "UP", "corral-2": "UP"}
        before = in_flight(fleet.b)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(chat, front.http, "in-flight-at-death")
            # Both replicas idle: leastconn takes the first server, the doomed one.
            wait_for(lambda: in_flight(doomed) == 1, 10, "the generation under way on the doomed replica")
            doomed.stop(sig_kill=True)
            assert pending.result().status_code == 502, "the client is told, the request is not replayed"
        # Requests right after the death: those sent to the dead replica are moved to the other.
        for i in range(8):
            assert chat(front.http, f"after-{i}", num_predict=1).status_code == 200
        wait_served(fleet.b, [f"after-{i}" for i in range(8)])
        log = front.log.read_text()
        assert re.search(r"/\+[12] \d+/\d+ \"POST /api/chat", log), "some requests were retried on another replica"
        # The generation under way at the death never reached the surviving replica.
        wait_for(lambda: in_flight(fleet.b) == before, 10, "the surviving replica idle")
        assert not served_by(fleet.b, "in-flight-at-death")
    finally:
        front.stop()


def nginx_copy(folder: Path, replicas: list[int]) -> Path:
    ports = {"http": free_port(), "https": free_port()}
    text = NGINX_CONF.read_text()
    text = sub(text, "pid /run/nginx.pid;", f"pid {folder}/nginx.pid;\ndaemon off;")
    text = sub(text, "listen 80;", f"listen 127.0.0.1:{ports['http']};")
    text = sub(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{ports['https']} ssl http2;")
    text = sub(text, "/etc/nginx/certs/", f"{folder}/certs/")
    text = sub(text, "/var/cache/nginx/", f"{folder}/")
    text = sub(text, "access_log /dev/stdout;", f"access_log {folder}/access.log;")
    for i, port in enumerate(replicas, 1):
        text = sub(text, f"corral-{i}:8080", f"127.0.0.1:{port}")
    make_cert(folder / "certs")
    path = folder / "nginx.conf"
    path.write_text(text)
    (folder / "ports").write_text(f"{ports['http']} {ports['https']}")
    return path


def nginx(folder: Path, *args: str) -> list[str]:
    return [
        tool("nginx", "Debian nginx"),
        *args,
        "-e",
        str(folder / "error.log"),
        "-p",
        str(folder),
        "-c",
        str(folder / "nginx.conf"),
    ]


def test_nginx_t_accepts_the_shipped_config_and_rejects_a_broken_copy(tmp_path: Path) -> None:
    nginx_copy(tmp_path, [free_port(), free_port()])
    result = run(*nginx(tmp_path, "-t"))
    assert result.returncode == 0, result.stderr
    conf = tmp_path / "nginx.conf"
    conf.write_text(sub(conf.read_text(), "proxy_buffering off;", "proxy_buffering of;"))
    result = run(*nginx(tmp_path, "-t"))
    assert result.returncode != 0 and "proxy_buffering" in result.stderr


def test_nginx_streams_unbuffered_and_moves_refused_requests(fleet: Fleet) -> None:
    folder = Path(tempfile.mkdtemp(prefix="corral-nginx-"))
    # The first replica refuses connections (nothing listens there): every request must reach the second.
    nginx_copy(folder, [free_port(), fleet.a.port])
    http, https = (
        f"{scheme}://127.0.0.1:{port}"
        for scheme, port in zip(("http", "https"), (folder / "ports").read_text().split(), strict=True)
    )
    proc = subprocess.Popen(nginx(folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: httpx.get(http + "/health", timeout=1).status_code == 200, 10, "nginx")
        for i in range(6):
            assert chat(http, f"nginx-{i}", num_predict=1).status_code == 200
        wait_served(fleet.a, [f"nginx-{i}" for i in range(6)])
        first, total = stream_timing(http)
        assert total - first > 0.3, (first, total)
        first, total = stream_timing(https, verify=trust(folder / "certs"))
        assert total - first > 0.3, (first, total)
    finally:
        proc.terminate()
        proc.wait(10)
