"""OpenAI SSE/JSON answers rebuilt as Ollama's native NDJSON/JSON."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from ollama._types import ChatResponse, GenerateResponse

from corral.protocol.translate import (
    SseToNdjson,
    chat_request_to_openai,
    generate_request_to_openai,
    openai_error_to_native,
    openai_response_to_native,
)


def sse(deltas: list[str], usage: bool = True, finish: str = "stop") -> bytes:
    out = b""
    for i, text in enumerate(deltas):
        delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
        out += (
            b"data: "
            + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).encode()
            + b"\n\n"
        )
    out += b": ping\n\n"
    out += (
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}).encode() + b"\r\n\r\n"
    )
    if usage:
        out += (
            b"data: "
            + json.dumps(
                {
                    "choices": [],
                    "usage": {"prompt_tokens": 7, "completion_tokens": len(deltas), "total_tokens": 7 + len(deltas)},
                }
            ).encode()
            + b"\n\n"
        )
    return out + b"data: [DONE]\n\n"


def run(kind: str, stream: bytes, cuts: list[int]) -> list[bytes]:
    t = SseToNdjson(kind, "m:1b", started_ns=1_000)
    out = b""
    last = 0
    for n, cut in enumerate([*sorted(set(cuts)), len(stream)]):
        out += t.feed(stream[last:cut], now_ns=2_000 + n)
        last = cut
    out += t.finish(now_ns=10_000)
    return out.split(b"\n")[:-1]


def test_request_mapping() -> None:
    body = chat_request_to_openai(
        {
            "model": "m",
            "messages": [{"role": "User", "content": "hi", "images": ["QUJD"]}],
            "options": {"num_predict": 5, "temperature": 0.2, "num_ctx": 8192},
            "format": "json",
        }
    )
    assert body["max_tokens"] == 5 and body["temperature"] == 0.2 and "num_ctx" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "user"
    assert body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    path, plain = generate_request_to_openai({"model": "m", "prompt": "x", "stream": False})
    assert path == "/v1/completions" and plain["prompt"] == "x" and plain["stream"] is False
    path, _ = generate_request_to_openai({"model": "m", "prompt": "x", "system": "be brief"})
    assert path == "/v1/chat/completions"


def test_stream_parses_with_the_ollama_client_types() -> None:
    lines = run("chat", sse(["Hel", "lo", " world"]), [])
    parsed = [ChatResponse(**json.loads(line)) for line in lines]
    assert "".join(p.message.content or "" for p in parsed) == "Hello world"
    final = parsed[-1]
    assert final.done and final.done_reason == "stop"
    assert final.eval_count == 3 and final.prompt_eval_count == 7
    assert final.total_duration == 9_000
    generate = run(
        "generate",
        sse(["a", "b"], finish="length").replace(
            b'"delta": {"role": "assistant", "content": "a"}', b'"delta": {}, "text": "a"'
        ),
        [],
    )
    assert GenerateResponse(**json.loads(generate[-1])).done_reason == "length"


@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=12), st.lists(st.integers(0, 2000), max_size=20))
def test_any_chunking_gives_the_same_lines(deltas: list[str], cuts: list[int]) -> None:
    stream = sse(deltas)
    whole = run("chat", stream, [])
    split = run("chat", stream, [c % (len(stream) + 1) for c in cuts])
    assert [json.loads(x)["message"]["content"] for x in split] == [json.loads(x)["message"]["content"] for x in whole]
    for line in split:
        assert line and b"\n" not in line and "\u2028" not in line.decode()
    assert "".join(json.loads(x)["message"]["content"] for x in split) == "".join(deltas)


def test_upstream_error_event_ends_with_an_error_line() -> None:
    t = SseToNdjson("chat", "m", 0)
    t.feed(b'data: {"error": {"message": "boom", "type": "api_error"}}\n\n', 1)
    assert json.loads(t.finish(2)) == {"error": "boom"}


def test_whole_answers_and_errors() -> None:
    native = openai_response_to_native(
        "chat",
        {
            "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
        "m",
        0,
        50,
    )
    assert ChatResponse(**native).message.content == "hi"
    assert native["done_reason"] == "length" and native["eval_count"] == 1
    assert json.loads(openai_error_to_native(404, b'{"error": {"message": "no such model"}}')) == {
        "error": "no such model"
    }
    assert json.loads(openai_error_to_native(500, b"oops")) == {"error": "oops"}
