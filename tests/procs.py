"""Real processes for tests: `corral sim` nodes and `corral serve`, started on free loopback ports and
waited on by condition (never by a fixed sleep)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml


def single_process(reason: str) -> pytest.MarkDecorator:
    """Skip under CORRAL_TEST_WORKERS > 1: the test asserts what only one process can do; `reason` names
    the limitation, which docs/deploy.md (Worker processes) documents."""
    workers = int(os.environ.get("CORRAL_TEST_WORKERS") or 1)
    return pytest.mark.skipif(workers > 1, reason=f"single process only: {reason}")


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a Corral process's output (access and other log lines), parsed."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing we wait for is not there yet
            last = exc
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}" + (f": {last}" if last else ""))


class Proc:
    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix="corral-test-", suffix=".log", delete=False)
        self.args = args
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc.poll() is None:
            if sig_kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _wait_http(proc: Proc, path: str, timeout: float, scheme: str = "http") -> None:
    base = proc.url if scheme == "http" else proc.url.replace("http://", "https://")

    def ok() -> bool:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.proc.returncode}:\n{proc.output()[-3000:]}")
        return httpx.get(base + path, timeout=1, verify=False).status_code < 500

    try:
        wait_for(ok, timeout, f"{' '.join(proc.args[2:5])} on {proc.url}")
    except RuntimeError:
        raise
    except TimeoutError as exc:
        proc.stop(sig_kill=True)
        raise TimeoutError(f"{exc}\n{proc.output()[-3000:]}") from None


def start_sim(*models: str, port: int | None = None, extra: list[str] | None = None, timeout: float = 15.0) -> Proc:
    port = port or free_port()
    args = [sys.executable, "-m", "corral", "sim", "--port", str(port)]
    for model in models:
        args += ["--model", model]
    proc = Proc(args + list(extra or []), port)
    _wait_http(proc, "/", timeout)
    return proc


def redis_for_workers() -> str:
    """A Redis of its own for one Corral (as its memory store would be; atexit stops it)."""
    import atexit

    from tests.contract.servers import start_redis

    manager = start_redis()
    server = manager.__enter__()
    atexit.register(manager.__exit__, None, None, None)
    return str(server.url)


def _as_workers(config: dict[str, Any], folder: Path) -> None:
    """CORRAL_TEST_WORKERS=N: run the gateway tests against `corral serve` with N workers (a test that
    sets server.workers itself keeps its value). Limits then need Redis, as they do in production."""
    workers = int(os.environ.get("CORRAL_TEST_WORKERS") or 1)
    server = config.setdefault("server", {})
    if workers <= 1 or "workers" in server:
        return
    server["workers"] = workers
    # Workers keep run-time fleet changes in the key database (a single process, in memory): one of its own
    # per test's Corral, kept across its restarts (the config is reused), never shared with other tests.
    config.setdefault("auth", {}).setdefault("store_url", f"sqlite:///{folder}/corral-keys.db")
    limits = config.setdefault("limits", {})
    auth = (config.get("auth") or {}).get("enabled")
    if "redis_url" not in limits and (auth or any(limits.get(k) for k in ("per_ip_rpm", "global_rpm", "global_tpm"))):
        limits["redis_url"] = redis_for_workers()


def start_corral(
    config: dict[str, Any],
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
    ready_scheme: str = "http",
    args: list[str] | None = None,
) -> Proc:
    port = config.setdefault("server", {}).get("port") or free_port()
    config["server"]["port"] = port
    config.setdefault("server", {}).setdefault("host", "127.0.0.1")
    folder = Path(tempfile.mkdtemp(prefix="corral-cfg-"))
    _as_workers(config, folder)
    config.setdefault("audit", {}).setdefault("path", str(folder / "audit.log"))
    path = folder / "corral.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = Proc(
        [sys.executable, "-m", "corral", "serve", "--config", str(path), *(args or [])],
        port,
        {"CORRAL_LOGGING__FORMAT": "json", **(env or {})},
    )
    proc.config_path = path  # type: ignore[attr-defined]
    _wait_http(proc, "/health", timeout, ready_scheme)
    return proc


@contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def sim_stats(sim: Proc) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(httpx.get(sim.url + "/_sim/stats", timeout=5).content)
    return data


@dataclass
class Fleet:
    corral: Proc
    a: Proc
    b: Proc
    slow: Proc
    faulty: Proc
    oa: Proc

    @property
    def url(self) -> str:
        return self.corral.url


def new_key(config: Path, *args: str) -> str:
    """`corral keys create ARGS --config CONFIG`; the new key's plaintext."""
    result = subprocess.run(
        [sys.executable, "-m", "corral", "keys", "create", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
