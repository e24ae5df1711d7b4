"""The server's own cost per request, without sockets: feed a request's bytes to `HttpServerProtocol`,
let a trivial handler read the body and answer, repeat. CPU time (process_time), best of several
trials, so other work on the machine barely moves it.

    .venv/bin/python -m bench.server_path [--requests 20000] [--trials 7]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop

from corral.net.limits import ConnectionTable
from corral.net.request import Request
from corral.net.response import Response
from corral.net.server import HttpServerProtocol, ServerLimits

BODY = b'{"model":"bench:1b","prompt":"hi","stream":false}'
REQUEST = (
    b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer crl_abcdefgh_0123456789012345678901234567890123456789012\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ANSWER = b'{"model":"bench:1b","created_at":"2026-01-01T00:00:00Z","response":"hello","done":true,"eval_count":1}'


class Sink:
    """A transport that accepts every write."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def handler(request: Request, response: Response) -> None:
    await request.read_body(1 << 24)
    response.send(200, [(b"content-type", b"application/json; charset=utf-8"), (b"x-request-id", b"abc")], ANSWER)


async def run(requests: int, trials: int) -> float:
    limits = ServerLimits()
    conn = HttpServerProtocol(handler, limits, ConnectionTable(limits.max_connections, 256))
    conn.connection_made(Sink())  # type: ignore[arg-type]
    best = float("inf")
    for _ in range(trials):
        start = time.process_time()
        for _ in range(requests):
            conn.data_received(REQUEST)
            await asyncio.sleep(0)  # the handler's task runs to its end
        best = min(best, (time.process_time() - start) / requests)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    print(f"{uvloop.run(run(args.requests, args.trials)) * 1e6:.2f} µs of CPU per request")


if __name__ == "__main__":
    main()
