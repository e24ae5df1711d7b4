"""Request framing as an HTTP/1.1 peer sees it: Host, trailers, HTTP/1.0, CONNECT and malformed input,
request smuggling, pipelining, and which headers reach the node (issue 9, item 5; the framing basics)."""

from __future__ import annotations

import socket

import h11
import orjson
import pytest

from procs import Proc
from tests.conformance.conftest import Faked
from tests.conformance.peers import H11Client, parse_head, raw

GENERATE = b'{"model":"edge:1b","prompt":"hi","stream":false,"options":{"num_predict":3}}'
# The messages Corral gives for requests its parser refuses: fixed texts, nothing from the parser.
GENERIC = {
    "malformed HTTP request",
    "the CONNECT method is not supported",
    "protocol upgrade is not supported",
    "request header fields too large",
}


def test_http11_without_host_is_400_and_http10_without_host_is_served(edge: Proc) -> None:
    status, _, body = parse_head(raw(edge.port, b"GET /api/version HTTP/1.1\r\n\r\n"))
    assert status == 400
    assert orjson.loads(body) == {"error": "missing required Host header"}
    status, _, body = parse_head(raw(edge.port, b"GET /api/version HTTP/1.0\r\n\r\n"))
    assert status == 200 and b"version" in body


def test_two_host_headers_are_400(edge: Proc) -> None:
    status, _, body = parse_head(raw(edge.port, b"GET /api/version HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"))
    assert status == 400
    assert orjson.loads(body) == {"error": "too many Host headers"}


def test_http10_clients_get_streams_without_chunked_encoding(edge: Proc) -> None:
    body = b'{"model":"edge:1b","prompt":"hi","options":{"num_predict":5}}'
    request = b"POST /api/generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    status, headers, rest = parse_head(raw(edge.port, request, timeout=10))
    assert status == 200
    assert b"transfer-encoding" not in headers
    assert headers[b"connection"] == b"close"
    lines = [orjson.loads(line) for line in rest.splitlines() if line]
    assert len(lines) == 6 and lines[-1]["done"] is True  # plain NDJSON up to the close, no chunk sizes


def test_connect_gets_a_generic_message(edge: Proc) -> None:
    reply = raw(edge.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    status, headers, body = parse_head(reply)
    assert status == 400 and headers[b"connection"] == b"close"
    assert orjson.loads(body)["error"] in GENERIC


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /\x01 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: y\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n",
    ],
    ids=["control-char-in-path", "space-in-name", "non-numeric-length", "bad-version"],
)
def test_malformed_requests_get_400_without_parser_internals(edge: Proc, request_bytes: bytes) -> None:
    status, _, body = parse_head(raw(edge.port, request_bytes))
    assert status == 400
    assert orjson.loads(body)["error"] in GENERIC


def test_an_unhandled_upgrade_is_ignored_as_go_does(edge: Proc) -> None:
    # `curl --http2` on plain http asks for h2c; Ollama's Go server answers in HTTP/1.1.
    reply = raw(edge.port, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"  # noqa: E501
                b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")  # fmt: skip
    status, _, body = parse_head(reply)
    assert status == 200 and body == b"Ollama is running"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        b"Content-Length: 4\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
    ],
    ids=["cl-then-te", "te-then-cl", "two-lengths", "chunked-not-last"],
)
def test_ambiguous_framing_is_400(edge: Proc, framing: bytes) -> None:
    request = (
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\n" + framing + b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    )
    reply = raw(edge.port, request)
    assert reply.startswith(b"HTTP/1.1 400")
    assert reply.count(b"HTTP/1.1 ") == 1  # nothing after the refusal is read as a request


def test_pipelined_requests_are_answered_in_order(edge: Proc) -> None:
    # Three requests in one write; h11 (one fresh state machine per request) frames them, and one
    # h11 client connection reads the answers in order.
    requests = [
        ("GET", "/api/version", b""),
        ("POST", "/api/generate", GENERATE),
        ("GET", "/api/tags", b""),
    ]
    wire = b""
    for method, target, body in requests:
        framer = h11.Connection(h11.CLIENT)
        headers = (
            [(b"host", b"localhost"), (b"content-length", b"%d" % len(body))] if body else [(b"host", b"localhost")]
        )
        wire += framer.send(h11.Request(method=method, target=target, headers=headers)) or b""
        wire += (framer.send(h11.Data(data=body)) or b"") if body else b""
        wire += framer.send(h11.EndOfMessage()) or b""
    client = H11Client(edge.port)
    try:
        client.sock.sendall(wire)
        answers = []
        for method, target, _ in requests:
            if client.conn.our_state is h11.DONE:
                client.conn.start_next_cycle()
            client.conn.send(h11.Request(method=method, target=target, headers=[(b"host", b"localhost")]))
            client.conn.send(h11.EndOfMessage())  # the bytes went out above; this keeps h11's state in step
            answers.append(client.receive())
    finally:
        client.close()
    assert [a.status for a in answers] == [200, 200, 200]
    assert b"version" in answers[0].body
    assert orjson.loads(answers[1].body)["done"] is True
    assert b"models" in answers[2].body


def test_credentials_never_reach_the_node(faked: Faked) -> None:
    client = H11Client(faked.corral.port)
    secret = b"Bearer sk-client-secret"
    try:
        reply = client.request(
            "POST",
            "/api/generate",
            [
                (b"authorization", secret),
                (b"x-api-key", b"client-key"),
                (b"cookie", b"session=1"),
                (b"proxy-authorization", b"Basic eDp5"),
                (b"content-type", b"application/json"),
            ],
            b'{"model":"fake:1b","prompt":"hi","stream":false}',
        )
    finally:
        client.close()
    assert reply.status == 200
    _, _, headers, body = faked.node.generate_requests()[-1]
    names = {name.lower() for name, _ in headers}
    assert not names & {b"authorization", b"x-api-key", b"cookie", b"proxy-authorization"}
    assert body == b'{"model":"fake:1b","prompt":"hi","stream":false}'


def test_trailers_are_not_request_headers(faked: Faked) -> None:
    body = b'{"model":"fake:1b","prompt":"hi","stream":false}'
    request = (
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailed\r\n\r\n"
        b"%x\r\n%s\r\n0\r\nX-Trailed: from-the-trailer\r\n\r\n" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", faked.corral.port), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while b'"done":true' not in reply:
            piece = sock.recv(65536)
            assert piece, reply
            reply += piece
    assert reply.startswith(b"HTTP/1.1 200")
    _, _, headers, forwarded = faked.node.generate_requests()[-1]
    assert b"x-trailed" not in {name.lower() for name, _ in headers}
    assert forwarded == body


def test_headers_named_in_connection_are_not_forwarded(faked: Faked) -> None:
    client = H11Client(faked.corral.port)
    try:
        reply = client.request(
            "POST",
            "/api/generate",
            [(b"connection", b"keep-alive, X-Hop-Secret"), (b"x-hop-secret", b"for-corral-only")],
            b'{"model":"fake:1b","prompt":"hi","stream":false}',
        )
    finally:
        client.close()
    assert reply.status == 200
    _, _, headers, _ = faked.node.generate_requests()[-1]
    assert b"x-hop-secret" not in {name.lower() for name, _ in headers}
