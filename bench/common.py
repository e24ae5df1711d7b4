"""Helpers shared by the benchmarks: free ports, waiting for a server to answer, stopping processes."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline_s: float = 20) -> None:
    """Wait until `url` answers (any status below 500), or exit with an error."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status < 500:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def stop_all(procs: Iterable[subprocess.Popen[bytes]], wait_s: float = 10) -> None:
    """Ask every process to stop at once, then wait for each; one that outlasts `wait_s` is killed."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
