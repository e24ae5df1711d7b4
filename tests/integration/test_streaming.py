"""Streams are relayed as they come, a client that leaves stops the node, and failures are explicit."""

from __future__ import annotations

import json
import socket

import httpx
import ollama
import openai
import pytest

from procs import Fleet, Proc, sim_stats, wait_for


def test_first_chunk_arrives_while_the_node_is_still_generating(fleet: Fleet) -> None:
    body = {"model": "slow:1b", "prompt": "go", "options": {"num_predict": 40}}  # 2 s of tokens at 20/s
    with httpx.stream("POST", fleet.url + "/api/generate", json=body, timeout=30) as reply:
        assert reply.headers["content-type"] == "application/x-ndjson"
        lines = reply.iter_lines()
        first = json.loads(next(lines))
        assert first["done"] is False
        # The node has not finished: the first token was relayed, not buffered until the end.
        assert sim_stats(fleet.slow)["in_flight"] >= 1
        rest = [json.loads(line) for line in lines]
    assert rest[-1]["done"] is True


def test_client_disconnect_cancels_generation_on_the_node(fleet: Fleet) -> None:
    before = sim_stats(fleet.slow)["cancelled"]
    body = json.dumps({"model": "slow:1b", "prompt": "go", "options": {"num_predict": 200}}).encode()
    with socket.create_connection(("127.0.0.1", fleet.corral.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while b'"done":false' not in received:
            received += sock.recv(4096)
    wait_for(lambda: sim_stats(fleet.slow)["cancelled"] > before, 5, "the node to see the cancellation")
    wait_for(lambda: sim_stats(fleet.slow)["in_flight"] == 0, 5, "the node's slot to be freed")


def test_mid_stream_failure_ends_with_an_error_line(fleet: Fleet, faulty: Proc) -> None:
    httpx.post(faulty.url + "/_sim/faults", json={"drop_after": 3}, timeout=5)
    with httpx.stream(
        "POST",
        fleet.url + "/api/chat",
        timeout=30,
        json={"model": "faulty:1b", "messages": [{"role": "user", "content": "hi"}]},
    ) as reply:
        lines = [json.loads(line) for line in reply.iter_lines()]
    assert "error" in lines[-1]
    assert not any(line.get("done") for line in lines)
    client = ollama.Client(host=fleet.url, timeout=30)
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat(model="faulty:1b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert err.value.status_code == -1


def test_mid_stream_failure_on_v1_raises_api_error(fleet: Fleet, faulty: Proc) -> None:
    httpx.post(faulty.url + "/_sim/faults", json={"drop_after": 3}, timeout=5)
    client = openai.OpenAI(base_url=fleet.url + "/v1", api_key="x", max_retries=0, timeout=30)
    with pytest.raises(openai.APIError):
        list(
            client.chat.completions.create(model="faulty:1b", messages=[{"role": "user", "content": "hi"}], stream=True)
        )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_node_error_mid_stream_on_v1_is_raised_not_swallowed(fleet: Fleet, faulty: Proc, path: str) -> None:
    """Ollama ends a /v1 stream whose runner failed with an empty delta and no [DONE]: the openai client
    would take that for a normal end. Through Corral the stream ends with an error event it raises on."""
    httpx.post(faulty.url + "/_sim/faults", json={"midstream_error_after": 2}, timeout=5)
    with httpx.stream(
        "POST",
        fleet.url + path,
        timeout=30,
        json={"model": "faulty:1b", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "stream": True},
    ) as reply:
        raw = reply.read()
    assert b"[DONE]" not in raw and b'"error"' in raw.rstrip().splitlines()[-1]
    client = openai.OpenAI(base_url=fleet.url + "/v1", api_key="x", max_retries=0, timeout=30)
    with pytest.raises(openai.APIError):
        if path == "/v1/completions":
            list(client.completions.create(model="faulty:1b", prompt="hi", stream=True))
        else:
            messages = [{"role": "user", "content": "hi"}]
            list(client.chat.completions.create(model="faulty:1b", messages=messages, stream=True))  # type: ignore[arg-type]
