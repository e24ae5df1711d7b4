"""Corral's own HTTP/1.1 server and pooled client, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from corral.domain.errors import BodyTooLarge, UpstreamTimeout
from corral.net.client import ConnectionPool, build_head
from corral.net.response import Request, Response
from corral.net.server import HttpServer, ServerLimits

Handler = Callable[[Request, Response], Awaitable[None]]


async def echo(request: Request, response: Response) -> None:
    body = await request.read_body(1 << 20)
    response.send(200, [(b"content-type", b"text/plain")], request.method.encode() + b" " + body)


async def with_server(handler: Handler, test: Callable[[int], Awaitable[None]], **limits: int) -> None:
    server = HttpServer(handler, ServerLimits(**limits))
    await server.start("127.0.0.1", 0)
    try:
        await asyncio.wait_for(test(server.port), 10)
    finally:
        server.stop_accepting()
        server.close_all()


async def exchange(port: int, raw: bytes, until: bytes, reader_limit: int = 1 << 20) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = b""
    while data.count(until) < 1:
        piece = await reader.read(reader_limit)
        if not piece:
            break
        data += piece
    writer.close()
    return data


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keep_alive_and_pipelining() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo"
        )
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"POST two"):
            data += await reader.read(65536)
        assert data.index(b"POST one") < data.index(b"POST two")
        writer.write(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        third = await reader.readuntil(b"GET ")
        assert b"200 OK" in third
        writer.close()

    run(with_server(echo, test))


def test_chunked_request_body_is_assembled() -> None:
    async def test(port: int) -> None:
        raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw += b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        assert (await exchange(port, raw, b"POST abcde")).endswith(b"POST abcde")

    run(with_server(echo, test))


def test_oversized_body_is_refused_413_from_its_content_length() -> None:
    async def handler(request: Request, response: Response) -> None:
        try:
            await request.read_body(1024)
        except BodyTooLarge as exc:
            response.send(413, [], exc.message.encode())

    async def test(port: int) -> None:
        # Only the head is sent: the answer must not wait for the 5000 bytes.
        reply = await exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"1024")
        assert reply.startswith(b"HTTP/1.1 413")
        assert b"connection: close" in reply

    run(with_server(handler, test))


def test_oversized_headers_are_refused_431() -> None:
    async def test(port: int) -> None:
        reply = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", b"}")
        assert reply.startswith(b"HTTP/1.1 431")

    run(with_server(echo, test, max_header_bytes=1024))


def test_streamed_chunks_leave_before_the_response_ends() -> None:
    release = asyncio.Event()

    async def handler(request: Request, response: Response) -> None:
        response.start(200, [(b"content-type", b"application/x-ndjson")])
        await response.write(b'{"n":1}\n')
        await release.wait()
        await response.write(b'{"n":2}\n')
        response.end()

    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b'{"n":1}\n')
        assert b"transfer-encoding: chunked" in head
        release.set()
        rest = await reader.readuntil(b"0\r\n\r\n")
        assert b'{"n":2}' in rest
        writer.close()

    run(with_server(handler, test))


def test_client_disconnect_cancels_the_handler() -> None:
    cancelled = asyncio.Event()

    async def handler(request: Request, response: Response) -> None:
        response.start(200, [])
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 5)

    run(with_server(handler, test))


def test_pool_reuses_a_connection_and_reads_chunked_bodies() -> None:
    peers: set[tuple[str, int]] = set()

    async def handler(request: Request, response: Response) -> None:
        peers.add(request.client)
        response.start(200, [(b"content-type", b"text/plain")])
        await response.write(b"hello ")
        await response.write(b"world")
        response.end()

    async def test(port: int) -> None:
        pool = ConnectionPool("t", "127.0.0.1", port)
        for _ in range(3):
            conn = await pool.acquire(2)
            conn.send(build_head("GET", b"/", pool.host_header, [], None), b"")
            head = await conn.response()
            assert head.status == 200 and head.chunked
            body: list[bytes] = []
            conn.attach(body.append)
            await conn.finished()
            conn.release()
            assert b"".join(body) == b"hello world"
        assert len(peers) == 1
        pool.close()

    run(with_server(handler, test))


def test_finished_exchanges_leave_no_timers_behind() -> None:
    # A small answer arrives whole with its head, before the proxy arms the body's idle timer: that
    # timer must not be left pending for `idle_s` (under load: one per request, minutes each). The
    # head's deadline keeps one timer per connection, re-armed lazily: never one per request.
    async def test(port: int) -> None:
        loop = asyncio.get_running_loop()
        pool = ConnectionPool("t", "127.0.0.1", port)
        for _ in range(50):
            conn = await pool.acquire(2)
            conn.send(build_head("POST", b"/", pool.host_header, [], 2), b"hi", first_byte_s=30)
            await conn.response()
            conn.attach(lambda _: None)
            conn.watch(300, 600)
            await conn.finished()
            conn.release()
        await asyncio.sleep(0)
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        client_timers = [h for h in timers if "UpstreamConnection" in repr(h)]
        assert len(client_timers) <= 1 and all("_check_head" in repr(h) for h in client_timers)
        pool.close()
        assert not [h for h in loop._scheduled if not h.cancelled() and "UpstreamConnection" in repr(h)]  # type: ignore[attr-defined]

    run(with_server(echo, test))


@pytest.mark.parametrize(("first", "second"), [(30.0, 0.2), (1.0, 1.5)])
def test_the_head_deadline_holds_on_a_reused_connection(first: float, second: float) -> None:
    # The head timer stays armed across a connection's exchanges: a later exchange fails in its own
    # time, neither the earlier exchange's (shorter: the timer re-arms itself) nor later (longer: the
    # timer is moved up), with the message that says so.
    answered = 0

    async def handler(request: Request, response: Response) -> None:
        nonlocal answered
        await request.read_body(1 << 20)
        answered += 1
        if answered == 1:
            response.send(200, [], b"ok")
        else:
            await asyncio.sleep(5)  # a hung node: never a head

    async def test(port: int) -> None:
        loop = asyncio.get_running_loop()
        pool = ConnectionPool("t", "127.0.0.1", port)
        conn = await pool.acquire(2)
        conn.send(build_head("POST", b"/", pool.host_header, [], 2), b"hi", first_byte_s=first)
        await conn.response()
        conn.attach(lambda _: None)
        await conn.finished()
        conn.release()
        again = await pool.acquire(2)
        assert again is conn
        started = loop.time()
        again.send(build_head("POST", b"/", pool.host_header, [], 2), b"hi", first_byte_s=second)
        try:
            await again.response()
        except UpstreamTimeout as exc:
            assert f"no response within {second:g}s" in exc.message
        else:
            raise AssertionError("the hung exchange got a head")
        assert second <= loop.time() - started < second + 1.5
        pool.close()

    run(with_server(handler, test))
