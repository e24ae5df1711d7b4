"""Request bodies (issue 9, items 4 and 8): sized before they are read, `100 Continue` only once auth and
size pass, a body that stops arriving times out, one request read ahead at most, and blobs of any size
streamed to the node at constant memory."""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import orjson

from procs import Proc, wait_for
from tests.conformance.conftest import MIB, Keyed, Sims
from tests.conformance.peers import memory_kib, parse_head, raw, read_until_closed

GENERATE = b'{"model":"edge:1b","prompt":"hi","stream":false,"options":{"num_predict":3}}'


def post_head(path: bytes, length: int, *extra: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n%s\r\n" % (path, length, b"".join(extra))


def test_a_declared_length_over_the_cap_is_413_before_any_byte_is_read(edge: Proc) -> None:
    # Only the head of a 50 MB request is sent; the answer must not wait for the body.
    reply = raw(edge.port, post_head(b"/api/generate", 50_000_000), timeout=5)
    status, headers, body = parse_head(reply)
    assert status == 413 and headers[b"connection"] == b"close"
    assert "limit is 1048576" in orjson.loads(body)["error"]


def test_a_chunked_body_is_cut_at_the_cap(edge: Proc) -> None:
    piece = b"x" * 65536
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        while sent < 8 * MIB and not reply:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            ready, _, _ = select.select([sock], [], [], 0.01)
            if ready:
                reply = read_until_closed(sock, 3)
    status, headers, body = parse_head(reply)
    assert status == 413 and headers[b"connection"] == b"close"
    assert "exceeds the limit of 1048576 bytes" in orjson.loads(body)["error"]
    assert sent < 8 * MIB  # answered while the client was still sending, never the final chunk


def test_100_continue_comes_only_after_auth_and_size_pass(keyed: Keyed) -> None:
    port = keyed.corral.port
    expect = b"Expect: 100-continue\r\n"
    auth = b"Authorization: Bearer %s\r\n" % keyed.key.encode()
    # No key: 401 straight away, no invitation to send the body.
    status, _, _ = parse_head(raw(port, post_head(b"/api/generate", len(GENERATE), expect)))
    assert status == 401
    # A good key but a body over the cap: 413, again without 100 Continue.
    status, _, _ = parse_head(raw(port, post_head(b"/api/generate", 2 * MIB, expect, auth)))
    assert status == 413
    # Both fine: 100 Continue first, then the answer once the body is sent.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(post_head(b"/api/generate", len(GENERATE), expect, auth))
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(GENERATE)
        sock.settimeout(10)
        final = sock.recv(65536)
    assert final.startswith(b"HTTP/1.1 200")


def test_a_chunked_trailer_does_not_authenticate(keyed: Keyed) -> None:
    port = keyed.corral.port
    body = b"%x\r\n%s\r\n" % (len(GENERATE), GENERATE)
    head = b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    key = b"Authorization: Bearer %s\r\n" % keyed.key.encode()
    trailed = raw(port, head + b"\r\n" + body + b"0\r\n" + key + b"\r\n", until_close=False)
    assert trailed.startswith(b"HTTP/1.1 401")
    in_head = raw(port, head + key + b"\r\n" + body + b"0\r\n\r\n", until_close=False)
    assert in_head.startswith(b"HTTP/1.1 200")  # the same key, where it belongs


def test_a_body_that_stops_arriving_is_408(edge: Proc) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
        sock.sendall(post_head(b"/api/generate", len(GENERATE)) + GENERATE[:10])
        started = time.monotonic()
        reply = read_until_closed(sock, 5)  # server.body_timeout_s is 1 s in this fixture
        took = time.monotonic() - started
    status, headers, body = parse_head(reply)
    assert status == 408 and headers[b"connection"] == b"close"
    assert "stopped arriving" in orjson.loads(body)["error"]
    assert 0.9 <= took < 3


def test_pipelined_bodies_behind_a_slow_stream_are_not_buffered(edge: Proc) -> None:
    # One connection: a slow stream, then 40 requests of ~1 MB each. Corral reads at most one request
    # ahead of the stream, so the rest wait in the client's socket, not in Corral's memory.
    stream = b'{"model":"slow:1b","prompt":"hi","options":{"num_predict":60}}'
    filler = b'{"pad":"' + b"p" * 1_000_000 + b'"}'
    sent = [0]
    stop = threading.Event()
    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=20)

    def writer() -> None:
        with contextlib.suppress(OSError):
            for _ in range(40):
                if stop.is_set():
                    return
                sock.sendall(
                    b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(filler), filler)
                )
                sent[0] += len(filler)

    try:
        before = memory_kib(edge.proc.pid)
        sock.sendall(post_head(b"/api/generate", len(stream)) + stream)
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # the stream has begun (about 3 s long)
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        progress = [-1, time.monotonic()]  # bytes sent, when that count was first seen

        def stalled() -> bool:
            if sent[0] != progress[0]:
                progress[:] = [sent[0], time.monotonic()]
                return False
            return sent[0] > 0 and time.monotonic() - progress[1] > 0.3

        wait_for(stalled, 5, "the pipelining writer to block")
        grown = memory_kib(edge.proc.pid) - before
        assert thread.is_alive()  # still blocked on the socket
        assert sent[0] < 40 * len(filler)
    finally:
        stop.set()
        sock.close()
    assert grown < 8 * 1024, f"RSS grew {grown} KiB with {sent[0]} bytes pipelined"


def blob(size: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"corral").digest() * 32768  # 1 MiB, not all one byte
    for _ in range(size // len(block)):
        yield block


def test_a_64_mib_blob_streams_through_at_constant_memory(edge: Proc, sims: Sims) -> None:
    size = 64 * MIB
    digest = hashlib.sha256()
    for piece in blob(size):
        digest.update(piece)
    name = "sha256:" + digest.hexdigest()
    before = memory_kib(edge.proc.pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], memory_kib(edge.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        reply = httpx.post(
            edge.url + f"/api/blobs/{name}",
            headers={"X-Corral-Node": "fast", "Content-Length": str(size)},
            content=blob(size),
            timeout=60,
        )
    finally:
        done.set()
        sampler.join(5)
    assert reply.status_code == 201, reply.text
    assert peak[0] - before < 32 * 1024, f"RSS peaked {peak[0] - before} KiB above the start"
    assert httpx.head(sims.fast.url + f"/api/blobs/{name}").status_code == 200  # the node has it, whole


def test_a_chunked_blob_is_streamed_too(edge: Proc, sims: Sims) -> None:
    size = 3 * MIB
    data = b"".join(blob(size)) + b"tail"
    name = "sha256:" + hashlib.sha256(data).hexdigest()
    pieces = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    reply = httpx.post(edge.url + f"/api/blobs/{name}", headers={"X-Corral-Node": "fast"}, content=pieces, timeout=30)
    assert reply.status_code == 201, reply.text
    assert httpx.head(sims.fast.url + f"/api/blobs/{name}").status_code == 200
    wrong = httpx.post(edge.url + f"/api/blobs/{name}", headers={"X-Corral-Node": "fast"}, content=b"other", timeout=10)
    assert wrong.status_code == 400 and "digest mismatch" in wrong.text  # the node's own answer, passed on
