"""Real Redis and PostgreSQL servers for tests: started as child processes on free loopback ports, waited
on by condition, stopped by PID. Usable outside pytest too (benchmarks, demos)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

PG_BIN = Path(os.environ.get("CORRAL_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ServerUnavailable(RuntimeError):
    """The server's binaries are not installed here."""


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        if check():
            return
        time.sleep(0.01)
    raise TimeoutError(f"{what} not ready after {timeout} s:\n{log.read_text(errors='replace')[-2000:]}")


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def start_redis(timeout: float = 10.0) -> Iterator[Server]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="corral-redis-") as tmp:
        port, log = free_port(), Path(tmp) / "redis.log"
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with log.open("wb") as out:
            proc = subprocess.Popen([*args, "--dir", tmp], stdout=out, stderr=subprocess.STDOUT)
        server = Server(f"redis://127.0.0.1:{port}/0", proc, log)
        try:
            _wait(lambda: _redis_pings(port), proc, log, "redis-server", timeout)
            yield server
        finally:
            server.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def start_postgres(timeout: float = 30.0) -> Iterator[Server]:
    """A throw-away cluster with trust auth; the URL names the `postgres` database as user `postgres`.
    As root, the server runs as the `postgres` system user (PostgreSQL refuses root)."""
    initdb, postgres = PG_BIN / "initdb", PG_BIN / "postgres"
    if not (initdb.exists() and postgres.exists()):
        raise ServerUnavailable(f"PostgreSQL binaries not found in {PG_BIN} (set CORRAL_PG_BIN)")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServerUnavailable("running as root and there is no `postgres` user") from exc
        user = "postgres"
    tmp = Path(tempfile.mkdtemp(prefix="corral-pg-"))
    try:
        if user is not None:
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        data, log = tmp / "data", tmp / "postgres.log"
        subprocess.run(
            [str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, user=user, cwd=tmp, timeout=timeout,
        )  # fmt: skip
        port = free_port()
        args = [str(postgres), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1"]
        args += ["-c", f"unix_socket_directories={tmp}", "-c", "fsync=off", "-c", "max_connections=200"]
        with log.open("wb") as out:
            if user is not None:
                os.chown(log, pw.pw_uid, pw.pw_gid)
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, user=user, cwd=tmp)
        server = Server(f"postgresql://postgres@127.0.0.1:{port}/postgres", proc, log)
        try:
            # The port opens only once the server accepts connections.
            _wait(lambda: _accepts(port), proc, log, "postgres", timeout)
            yield server
        finally:
            server.stop(signal.SIGINT)  # fast shutdown
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one coroutine of a contract case to its end, bounded so a hung server fails the case."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
