"""Fault injection, client disconnects and the /_sim control endpoints."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.sim.conftest import Sim, start_sim, wait_until

CHAT: Any = {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 10}}


@pytest.fixture(scope="module")
def slow() -> Iterator[Sim]:
    with start_sim("--model", "m:1b", "--tokens-per-second", "100", "--load-seconds", "0", "--parallel", "2") as node:
        yield node


@pytest.fixture
def node(slow: Sim) -> Iterator[Sim]:
    slow.reset()
    yield slow
    slow.reset()


def open_stream(sim: Sim, num_predict: int) -> socket.socket:
    """A raw streaming request; returns once the first token has arrived."""
    body = json.dumps({"model": "m:1b", "prompt": "go", "options": {"num_predict": num_predict}}).encode()
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    received = b""
    while b'"done":false' not in received:
        received += sock.recv(4096)
    return sock


def test_disconnect_cancels_generation_and_frees_the_slot(node: Sim) -> None:
    sock = open_stream(node, 1000)  # 10 s of tokens
    assert node.stats()["in_flight"] == 1
    sock.close()
    wait_until(lambda: node.stats()["cancelled"] == 1, 5, "the cancellation")
    stats = node.stats()
    assert stats["in_flight"] == 0 and stats["tokens"] < 500
    tokens = stats["tokens"]
    time.sleep(0.2)  # generation has stopped: no tokens are produced after the disconnect
    assert node.stats()["tokens"] == tokens


def test_disconnect_while_waiting_for_a_slot_leaves_the_queue(node: Sim) -> None:
    busy = [open_stream(node, 1000), open_stream(node, 1000)]  # both slots
    body = json.dumps({"model": "m:1b", "prompt": "go", "stream": False}).encode()
    waiter = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    waiter.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_until(lambda: node.stats()["waiting"] == 1, 5, "the third request to wait for a slot")
    waiter.close()
    wait_until(lambda: node.stats()["waiting"] == 0, 5, "the waiting request to leave")
    for sock in busy:
        sock.close()
    wait_until(lambda: node.stats()["in_flight"] == 0, 5, "the slots to be freed")
    assert node.stats()["cancelled"] == 3


def test_error_rate_fails_before_streaming(node: Sim) -> None:
    node.faults(error_rate=1.0)
    reply = httpx.post(node.url + "/api/chat", json=CHAT)
    assert reply.status_code == 500 and reply.headers["content-type"].startswith("application/json")
    assert "error" in reply.json()
    v1 = httpx.post(node.url + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert v1.status_code == 500 and v1.json()["error"]["type"] == "api_error"
    assert httpx.get(node.url + "/api/tags").status_code == 200  # faults leave the other routes alone
    assert node.stats()["injected_errors"] == 2


def test_latency_delays_the_first_byte(node: Sim) -> None:
    node.faults(latency_ms=300)
    started = time.monotonic()
    with httpx.stream("POST", node.url + "/api/chat", json=CHAT) as reply:
        next(reply.iter_lines())
        assert time.monotonic() - started >= 0.3


def test_hang_never_answers_until_the_client_leaves(node: Sim) -> None:
    node.faults(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(node.url + "/api/chat", json=CHAT, timeout=0.5)
    assert httpx.get(node.url + "/", timeout=2).status_code == 200
    wait_until(lambda: node.stats()["cancelled"] == 1, 5, "the hung request to be cancelled")


def test_drop_after_cuts_the_connection(node: Sim) -> None:
    node.faults(drop_after=3)
    lines = []
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("POST", node.url + "/api/chat", json=CHAT) as reply:
        for line in reply.iter_lines():
            lines.append(json.loads(line))
    assert len(lines) == 3 and not any(line["done"] for line in lines)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(node.url + "/api/chat", json={**CHAT, "stream": False})
    stats = node.stats()
    assert stats["dropped"] == 2 and stats["in_flight"] == 0
    assert "Traceback" not in node.log.read_text()  # a dropped connection is not logged as a crash


def test_midstream_error_ends_the_stream_with_an_error_line(node: Sim) -> None:
    node.faults(midstream_error_after=2)
    with httpx.stream("POST", node.url + "/api/chat", json=CHAT) as reply:
        lines = [json.loads(line) for line in reply.iter_lines()]
    assert reply.status_code == 200 and len(lines) == 3
    assert set(lines[-1]) == {"error"} and not any(line.get("done") for line in lines)
    with pytest.raises(ollama.ResponseError) as err:
        list(ollama.Client(host=node.url).chat(model="m:1b", messages=CHAT["messages"], stream=True))
    assert err.value.status_code == -1
    whole = httpx.post(node.url + "/api/chat", json={**CHAT, "stream": False})
    assert whole.status_code == 500
    # On /v1 Ollama sends an empty delta and ends without a finish chunk or [DONE]; openai-python stops quietly.
    client = openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model="m:1b", messages=CHAT["messages"], stream=True))
    assert chunks and all(c.choices[0].finish_reason is None for c in chunks)


def test_stats_show_the_last_request_headers(node: Sim) -> None:
    headers = {"X-Request-ID": "req-1", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    httpx.post(node.url + "/api/generate", json={"model": "m:1b", "prompt": "x", "stream": False}, headers=headers)
    seen = node.stats()["last_headers"]
    assert seen["x-request-id"] == "req-1" and seen["traceparent"] == headers["traceparent"]
    assert seen["host"] == f"127.0.0.1:{node.port}"
    httpx.get(node.url + "/api/tags", headers={"X-Probe": "1"})
    stats = node.stats()
    assert stats["headers_by_path"]["/api/tags"]["x-probe"] == "1"
    assert stats["requests"]["/api/generate"] == 1 and stats["requests"]["/api/tags"] == 1


def test_faults_endpoint_validates_and_reset_restores(node: Sim) -> None:
    bad = httpx.post(node.url + "/_sim/faults", json={"explode": True})
    assert bad.status_code == 400
    node.faults(error_rate=1.0, tokens_per_second=5000)
    assert node.stats()["faults"]["error_rate"] == 1.0
    node.reset()
    stats = node.stats()
    assert stats["faults"]["error_rate"] == 0.0 and stats["faults"]["tokens_per_second"] == 100
    assert stats["requests"] == {"/_sim/stats": 1}


def test_startup_faults_come_from_the_command_line() -> None:
    with start_sim("--model", "m:1b", "--load-seconds", "0", "--error-rate", "1", "--latency-ms", "5") as node:
        assert httpx.post(node.url + "/api/generate", json={"model": "m:1b", "prompt": "x"}).status_code == 500
        assert node.stats()["faults"]["latency_ms"] == 5
