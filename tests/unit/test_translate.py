"""Native Ollama requests as OpenAI requests, and OpenAI answers (SSE, JSON, errors) rebuilt in the
native shapes, checked against the official ollama client's response types."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ollama._types import ChatResponse, GenerateResponse

from corral.protocol.translate import (
    SseToNdjson,
    chat_request_to_openai,
    generate_request_to_openai,
    openai_error_to_native,
    openai_response_to_native,
    rfc3339,
)
from corral.protocol.translate_sse import SseDecoder, SseEvent

T0 = 1_761_499_281_000_000_000  # 2025-10-26T17:21:21Z


def event(doc: object) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def chat_sse(deltas: list[str], usage: bool = True, finish: str = "stop", eol: bytes = b"\n") -> bytes:
    out = event({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    for text in deltas:
        out += event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        out += event({"choices": [{"index": 1, "delta": {"content": "OTHER"}, "finish_reason": None}]})
    out += b": ping\n\n"
    out += event({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        tokens = {"prompt_tokens": 7, "completion_tokens": len(deltas), "total_tokens": 7 + len(deltas)}
        out += event({"choices": [], "usage": tokens})
    out += b"data: [DONE]\n\n"
    return out.replace(b"\n", eol)


def completion_sse(texts: list[str], finish: str = "length") -> bytes:
    out = b"".join(event({"choices": [{"text": t, "index": 0, "finish_reason": None}]}) for t in texts)
    return out + event({"choices": [{"text": "", "index": 0, "finish_reason": finish}]}) + b"data: [DONE]\n\n"


def translate(kind: str, stream: bytes, cuts: list[int] | None = None, end_ns: int = T0 + 9_000) -> list[bytes]:
    """Feeds `stream` cut at `cuts` (all at T0+2000) and returns the output lines, each with its \\n."""
    t = SseToNdjson(kind, "m:1b", started_ns=T0)
    out = b""
    last = 0
    for cut in [*sorted(set(cuts or [])), len(stream)]:
        out += t.feed(stream[last:cut], now_ns=T0 + 2_000)
        last = cut
    out += t.finish(now_ns=end_ns)
    lines = out.splitlines(keepends=True)
    assert b"".join(lines) == out
    return lines


# --- requests ---------------------------------------------------------------------------------


def test_chat_request_maps_options_format_and_stream() -> None:
    body = chat_request_to_openai(
        {
            "model": "m",
            "messages": [{"role": "User", "content": "hi"}],
            "options": {
                "num_predict": 5,
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 40,
                "seed": 3,
                "stop": "END",
                "frequency_penalty": 0.1,
                "presence_penalty": 0.2,
                "num_ctx": 8192,
                "repeat_penalty": 1.1,
            },
            "format": "json",
            "keep_alive": "5m",
        }
    )
    assert body == {
        "model": "m",
        "temperature": 0.2,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "top_k": 40,
        "seed": 3,
        "max_tokens": 5,
        "stop": ["END"],
        "response_format": {"type": "json_object"},
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_native_defaults_and_no_limit_values_are_dropped() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = chat_request_to_openai(
        {"model": "m", "messages": [], "stream": False, "format": schema, "options": {"num_predict": -1, "seed": -1}}
    )
    assert body["stream"] is False and "stream_options" not in body
    assert "max_tokens" not in body and "seed" not in body
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert "response_format" not in chat_request_to_openai({"model": "m", "messages": [], "format": ""})
    assert chat_request_to_openai({"model": "m", "messages": [], "think": "high"})["reasoning_effort"] == "high"


def test_images_become_data_urls_with_their_media_type() -> None:
    png, jpeg = "iVBORw0KGgoAAAANSUhEUg==", "/9j/4AAQSkZJRg=="
    body = chat_request_to_openai(
        {"model": "m", "messages": [{"role": "user", "content": "what?", "images": [png, jpeg]}]}
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{jpeg}"}},
    ]


def test_tool_calls_and_tool_results() -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    body = chat_request_to_openai(
        {
            "model": "m",
            "tools": tools,
            "messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                        {"id": "call_b", "function": {"name": "time", "arguments": '{"city":"Rome"}'}},
                    ],
                },
                {"role": "tool", "tool_name": "time", "content": "12:00"},
                {"role": "tool", "tool_name": "weather", "content": "sunny"},
            ],
        }
    )
    assert body["tools"] == tools
    calls = body["messages"][1]["tool_calls"]
    assert calls[0] == {
        "id": "call_1_0",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
    }
    assert calls[1]["id"] == "call_b" and calls[1]["function"]["arguments"] == '{"city":"Rome"}'
    assert body["messages"][2] == {"role": "tool", "content": "12:00", "tool_call_id": "call_b", "name": "time"}
    assert body["messages"][3]["tool_call_id"] == "call_1_0"


def test_generate_goes_to_completions_unless_it_needs_chat() -> None:
    path, plain = generate_request_to_openai({"model": "m", "prompt": "x", "suffix": "y", "stream": False})
    assert path == "/v1/completions"
    assert plain == {"model": "m", "stream": False, "prompt": "x", "suffix": "y"}
    path, chat = generate_request_to_openai({"model": "m", "prompt": "x", "system": "be brief", "images": ["QUJD"]})
    assert path == "/v1/chat/completions" and chat["stream"] is True
    assert chat["messages"][0] == {"role": "system", "content": "be brief"}
    assert chat["messages"][1]["content"][0] == {"type": "text", "text": "x"}


# --- streams ----------------------------------------------------------------------------------


def test_chat_stream_parses_with_the_ollama_client_types() -> None:
    lines = translate("chat", chat_sse(["Hel", "lo", " world"]))
    parsed = [ChatResponse(**json.loads(line)) for line in lines]
    assert "".join(p.message.content or "" for p in parsed) == "Hello world"
    assert all(p.message.role == "assistant" for p in parsed) and [p.done for p in parsed] == [False] * 3 + [True]
    final = json.loads(lines[-1])
    assert final == {
        "model": "m:1b",
        "created_at": "2025-10-26T17:21:21.000009Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 9_000,
        "prompt_eval_count": 7,
        "prompt_eval_duration": 2_000,
        "eval_count": 3,
        "eval_duration": 7_000,
    }
    assert json.loads(lines[0])["created_at"] == "2025-10-26T17:21:21.000002Z"


def test_generate_stream_counts_chunks_without_usage() -> None:
    lines = translate("generate", completion_sse([" a", " city"]))
    parsed = [GenerateResponse(**json.loads(line)) for line in lines]
    assert [p.response for p in parsed] == [" a", " city", ""]
    final = json.loads(lines[-1])
    assert final["done_reason"] == "length" and final["eval_count"] == 2 and "prompt_eval_count" not in final
    assert "load_duration" not in final


def test_generate_through_chat_chunks() -> None:
    lines = translate("generate", chat_sse(["x", "y"], finish="length"))
    assert [json.loads(line)["response"] for line in lines] == ["x", "y", ""]
    assert GenerateResponse(**json.loads(lines[-1])).done_reason == "length"


def test_reasoning_becomes_thinking() -> None:
    stream = event({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]})
    stream += event({"choices": [{"index": 0, "delta": {"reasoning": "so"}}]})
    stream += event({"choices": [{"index": 0, "delta": {"content": "42"}, "finish_reason": "stop"}]})
    lines = [json.loads(line) for line in translate("chat", stream)]
    assert [m["message"].get("thinking") for m in lines] == ["hmm", "so", None, None]
    assert ChatResponse(**lines[0]).message.thinking == "hmm"
    generate = [json.loads(line) for line in translate("generate", stream)]
    assert generate[0]["thinking"] == "hmm" and generate[0]["response"] == ""


def test_tool_call_deltas_are_collected_and_parsed() -> None:
    def call(index: int, **fields: Any) -> bytes:
        return event({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}]})

    stream = event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
    stream += call(0, id="call_1", type="function", function={"name": "weather", "arguments": ""})
    stream += call(0, function={"arguments": '{"city": '})
    stream += call(1, id="call_2", function={"name": "time", "arguments": '{"tz": "CET"}'})
    stream += call(0, function={"arguments": '"Paris"}'})
    stream += event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}) + b"data: [DONE]\n\n"
    lines = translate("chat", stream)
    assert len(lines) == 2
    tools = ChatResponse(**json.loads(lines[0])).message.tool_calls
    assert tools is not None
    assert [(c.function.name, dict(c.function.arguments)) for c in tools] == [
        ("weather", {"city": "Paris"}),
        ("time", {"tz": "CET"}),
    ]
    assert json.loads(lines[0])["message"]["tool_calls"][0]["id"] == "call_1"
    assert json.loads(lines[-1])["done_reason"] == "stop" and "eval_count" not in json.loads(lines[-1])


def test_upstream_error_event_gives_an_error_line_at_once() -> None:
    t = SseToNdjson("chat", "m", T0)
    first = t.feed(event({"choices": [{"index": 0, "delta": {"content": "a"}}]}), T0 + 1)
    assert json.loads(first)["message"]["content"] == "a"
    line = t.feed(b'data: {"error": {"message": "boom", "type": "api_error"}}\n\ndata: {"choices": [', T0 + 2)
    assert line == b'{"error":"boom"}\n'
    assert t.feed(b"]}\n\n" + event({"choices": [{"delta": {"content": "late"}}]}), T0 + 3) == b""
    assert t.finish(T0 + 4) == b"" and t.final is None and not t.ended_cleanly
    other = SseToNdjson("chat", "m", T0)
    assert json.loads(other.feed(b"event: error\ndata: overloaded\n\n", T0)) == {"error": "overloaded"}


def test_a_stream_cut_short_ends_with_an_error_line() -> None:
    t = SseToNdjson("generate", "m", T0)
    t.feed(event({"choices": [{"text": "a", "index": 0}]}), T0 + 1)
    assert "error" in json.loads(t.finish(T0 + 2)) and t.final is None


def test_last_event_without_blank_line_and_cr_line_endings() -> None:
    lines = translate("chat", chat_sse(["a", "b"], eol=b"\r").rstrip(b"\r"))
    assert json.loads(lines[-1])["done"] is True and len(lines) == 3
    split = b'data: {"choices": [{"index": 0,\ndata:  "delta": {"content": "x"}}]}\n\ndata: [DONE]'
    assert [json.loads(line)["message"]["content"] for line in translate("chat", b"\xef\xbb\xbf" + split)] == ["x", ""]


def test_line_separators_are_escaped() -> None:
    text = "a\u2028b\u2029c\x85d\x0be\ud800"
    lines = translate("chat", chat_sse([text]))
    assert len(lines) == 2 and b"\xe2\x80\xa8" not in lines[0] and b"\xc2\x85" not in lines[0]
    assert json.loads(lines[0])["message"]["content"] == text
    assert lines[0].decode("utf-8", "surrogatepass").splitlines() == [lines[0].decode().rstrip("\n")]


def test_rfc3339() -> None:
    assert rfc3339(T0) == "2025-10-26T17:21:21Z"
    assert rfc3339(T0 + 196_249_000) == "2025-10-26T17:21:21.196249Z"
    assert rfc3339(T0 + 1) == "2025-10-26T17:21:21.000000001Z"


deltas = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=10)


@given(deltas, st.lists(st.integers(0, 4000), max_size=25), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_chunking_gives_the_same_bytes(texts: list[str], cuts: list[int], eol: bytes) -> None:
    stream = chat_sse(texts, eol=eol)
    whole = translate("chat", stream)
    split = translate("chat", stream, [c % (len(stream) + 1) for c in cuts])
    assert split == whole
    for line in split:
        assert line.endswith(b"\n") and line.strip() and len(line.decode().splitlines()) == 1
        ChatResponse(**json.loads(line))
    assert "".join(json.loads(line)["message"]["content"] for line in split) == "".join(texts)
    assert json.loads(split[-1])["eval_count"] == len(texts)


_FRAGMENTS = [b"data: ", b"data:", b"event: error\n", b"\n", b"\r", b"\r\n", b": x", b"[DONE]", b"{", b"}", b"[", b"]"]
_FRAGMENTS += [b'"choices":', b'{"index":0,', b'"delta":', b'"content":"\xe2\x80\xa8"', b'"text":"t"', b'"error":']
_FRAGMENTS += [b'"tool_calls":[{"function":{"arguments":"{"}}]', b'"finish_reason":"length"', b'"usage":{}', b","]
sse_like = st.lists(st.one_of(st.binary(max_size=8), st.sampled_from(_FRAGMENTS)), max_size=30).map(b"".join)


@given(st.lists(st.one_of(st.binary(max_size=40), sse_like), max_size=15))
@settings(max_examples=300)
def test_garbage_never_raises_and_never_breaks_the_lines(chunks: list[bytes]) -> None:
    for kind in ("chat", "generate"):
        t = SseToNdjson(kind, "m", T0)
        out = b"".join(t.feed(c, T0 + 1) for c in [*chunks, b'data: {"choices":[{"delta":{"content":"z"}}]}\n\n'])
        out += t.finish(T0 + 2)
        for line in out.splitlines(keepends=True):
            assert line.endswith(b"\n") and isinstance(json.loads(line), dict)


@given(st.lists(st.sampled_from([b"data: a", b"data:b", b"", b": c", b"event: e", b"id: 1", b"data"]), max_size=12))
def test_sse_decoder_events(lines: list[bytes]) -> None:
    stream = b"\n".join(lines) + b"\n\n"
    whole = SseDecoder().feed(stream)
    pieces = SseDecoder()
    split = [e for i in range(len(stream)) for e in pieces.feed(stream[i : i + 1])] + pieces.close()
    assert split == whole
    assert all(isinstance(e, SseEvent) and e.data is not None for e in whole)


# --- whole answers and errors -----------------------------------------------------------------


def test_whole_chat_answer() -> None:
    native = openai_response_to_native(
        "chat",
        {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "think",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9},
        },
        "m",
        T0,
        T0 + 50,
    )
    reply = ChatResponse(**native)
    assert reply.message.content == "" and reply.message.thinking == "think" and reply.done_reason == "stop"
    assert reply.message.tool_calls and dict(reply.message.tool_calls[0].function.arguments) == {"x": 1}
    assert native["eval_count"] == 9 and native["prompt_eval_count"] == 3
    assert native["total_duration"] == 50 and native["eval_duration"] == 50 and "prompt_eval_duration" not in native


def test_whole_generate_answer() -> None:
    body = {"choices": [{"text": " a city", "index": 0, "finish_reason": "length"}], "usage": {"prompt_tokens": 6}}
    native = openai_response_to_native("generate", body, "g", T0, T0 + 10)
    reply = GenerateResponse(**native)
    assert reply.response == " a city" and reply.done and reply.done_reason == "length"
    assert "eval_count" not in native and native["prompt_eval_count"] == 6
    via_chat = {"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]}
    assert openai_response_to_native("generate", via_chat, "g", T0, T0 + 10)["response"] == "hi"


def test_error_bodies() -> None:
    def native(status: int, body: bytes) -> object:
        return json.loads(openai_error_to_native(status, body))

    assert native(404, b'{"error": {"message": "no such model", "type": "x"}}') == {"error": "no such model"}
    assert native(400, b'{"error": "bad"}') == {"error": "bad"}
    assert native(422, b'{"detail": [{"loc": ["body"], "msg": "x"}]}') == {"error": '[{"loc":["body"],"msg":"x"}]'}
    assert native(400, b'{"object": "error", "message": "too long"}') == {"error": "too long"}
    assert native(500, b"oops\n") == {"error": "oops"}
    assert native(502, b"") == {"error": "the node answered HTTP 502"}
    assert native(500, b'"\xe2\x80\xa8"') == {"error": "the node answered HTTP 500"}
