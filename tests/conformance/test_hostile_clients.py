"""Clients that try to exhaust memory or connections before authentication (issue 9, item 4): refused
cheaply, and Corral's memory (VmRSS from /proc) stays flat."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator

import orjson

from procs import Proc
from tests.conformance.peers import H11Client, closed_by_peer, memory_kib, parse_head, raw, read_until_closed

HEAD = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n"


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_more_than_100_header_lines_are_431(edge: Proc) -> None:
    at_cap = HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(99)) + b"\r\n"
    assert raw(edge.port, at_cap, until_close=False).startswith(b"HTTP/1.1 200")
    over = HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(100)) + b"\r\n"
    status, headers, body = parse_head(raw(edge.port, over))
    assert status == 431 and headers[b"connection"] == b"close"
    assert orjson.loads(body) == {"error": "request header fields too large"}


def test_a_head_over_the_byte_cap_is_431_even_without_a_line_end(edge: Proc) -> None:
    assert raw(edge.port, HEAD + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
    # One header value that never ends: refused once the head passes the cap, not buffered forever.
    with connect(edge.port) as sock:
        sock.sendall(HEAD + b"X-Endless: ")
        reply = b""
        for _ in range(64):  # up to 4 MiB, 64 KiB at a time, until the answer comes
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                sock.sendall(b"a" * 65536)
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready:
                reply = sock.recv(65536)
                break
        assert reply.startswith(b"HTTP/1.1 431")


def test_fifty_connections_of_tiny_header_lines_cost_no_memory(edge: Proc) -> None:
    # 60,000 tiny header lines per connection used to be read whole (~7 MB of RSS each).
    flood = HEAD + b"a:b\r\n" * 60_000
    before = memory_kib(edge.proc.pid)
    with sockets() as opened:
        for _ in range(50):
            sock = connect(edge.port)
            opened.append(sock)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(flood)
        replies = [read_until_closed(sock, 5) for sock in opened]
        grown = memory_kib(edge.proc.pid) - before
    assert all(reply.startswith(b"HTTP/1.1 431") for reply in replies)
    assert grown < 16 * 1024, f"RSS grew {grown} KiB"


def test_a_head_dripped_byte_by_byte_is_cut_at_the_header_timeout(edge: Proc) -> None:
    # The edge fixture's server.header_timeout_s is 1 s: the whole head, however steadily it drips.
    with connect(edge.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n")
        reply = b""
        while not reply and time.monotonic() - started < 5:
            sock.sendall(b"X")
            ready, _, _ = select.select([sock], [], [], 0.1)  # paces the drip; ends at the answer
            if ready:
                reply = read_until_closed(sock, 2)
        took = time.monotonic() - started
    status, headers, body = parse_head(reply)
    assert status == 408 and headers[b"connection"] == b"close"
    assert orjson.loads(body) == {"error": "the request head did not arrive in time"}
    assert 0.9 <= took < 3, took


def test_many_dripping_connections_are_all_closed_in_time(edge: Proc) -> None:
    with sockets() as opened:
        for _ in range(50):
            sock = connect(edge.port)
            sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\n")
            opened.append(sock)
        started = time.monotonic()
        open_ones = set(opened)
        while open_ones and time.monotonic() - started < 6:
            for sock in list(open_ones):
                try:
                    sock.sendall(b"x")
                except OSError:
                    open_ones.discard(sock)
            ready, _, _ = select.select(list(open_ones), [], [], 0.2)
            for sock in ready:
                if closed_by_peer(sock, 0.5):
                    open_ones.discard(sock)
        took = time.monotonic() - started
    assert not open_ones, f"{len(open_ones)} of 50 still open after {took:.1f}s"
    assert took < 4


def test_a_connection_that_sends_nothing_is_closed_silently(edge: Proc) -> None:
    with connect(edge.port) as sock:
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(100) == b""
        assert 0.9 <= time.monotonic() - started < 3


def test_the_oldest_idle_connection_makes_room_at_the_per_client_cap(capped: Proc) -> None:
    # server.max_connections_per_client is 3 in this fixture.
    clients = [H11Client(capped.port, source="127.0.0.2") for _ in range(3)]
    try:
        for client in clients:
            assert client.request("GET", "/api/version").status == 200  # accepted, now idle
        newcomer = H11Client(capped.port, source="127.0.0.2")
        clients.append(newcomer)
        assert closed_by_peer(clients[0].sock, 3), "the oldest idle connection was not closed"
        assert newcomer.request("GET", "/api/version").status == 200
        assert clients[1].request("GET", "/api/version").status == 200
        # Another address has its own allowance.
        other = H11Client(capped.port, source="127.0.0.3")
        clients.append(other)
        assert other.request("GET", "/api/version").status == 200
        assert not closed_by_peer(clients[2].sock, 0.2)
    finally:
        for client in clients:
            client.close()


def test_the_oldest_idle_connection_makes_room_at_the_total_cap(capped: Proc) -> None:
    # server.max_connections is 6: six addresses with one idle connection each fill it.
    clients = [H11Client(capped.port, source=f"127.0.1.{i}") for i in range(1, 7)]
    try:
        for client in clients:
            assert client.request("GET", "/api/version").status == 200
        newcomer = H11Client(capped.port, source="127.0.1.7")
        clients.append(newcomer)
        assert closed_by_peer(clients[0].sock, 3), "the oldest idle connection was not closed"
        assert newcomer.request("GET", "/api/version").status == 200
    finally:
        for client in clients:
            client.close()


def test_a_new_connection_is_refused_when_every_one_is_busy(capped: Proc) -> None:
    stream = b'{"model":"slow:1b","prompt":"hi","options":{"num_predict":30}}'
    busy = [connect(capped.port, "127.0.0.4") for _ in range(3)]
    with sockets() as opened:
        opened.extend(busy)
        for sock in busy:
            sock.sendall(
                b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
                % (len(stream), stream)
            )
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # streaming: about 1.5 s to go
        refused = connect(capped.port, "127.0.0.4")
        opened.append(refused)
        started = time.monotonic()
        assert closed_by_peer(refused, 1), "a connection over the cap was kept"
        assert time.monotonic() - started < 0.5
        for sock in busy:  # the busy ones were left alone and finish their streams
            assert b'"done":true' in read_until_closed_or(sock, b"0\r\n\r\n", 10)


def read_until_closed_or(sock: socket.socket, end: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(end) and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data
