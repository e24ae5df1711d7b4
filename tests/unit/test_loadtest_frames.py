"""Reading streamed answers (NDJSON and SSE) for TTFT, inter-token gaps and token counts, and building
the requests the load generator sends."""

from __future__ import annotations

import itertools
from pathlib import Path

import httptools
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.loadtest.frames import NdjsonReader, SseReader, StreamReader, answer_tokens, error_message
from corral.loadtest.requests import Prompt, encode_requests, parse_target, read_prompts


def ndjson(words: list[str], eval_count: int | None = None) -> bytes:
    lines = [
        {
            "model": "m",
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": w},
            "done": False,
        }
        for w in words
    ]
    final: dict[str, object] = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True}
    final |= {"done_reason": "stop", "eval_count": len(words) if eval_count is None else eval_count}
    return b"".join(orjson.dumps(x) + b"\n" for x in [*lines, final])


def sse(words: list[str], usage: int | None = None, done: bool = True) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [base | {"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    events.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        events.append(base | {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": usage}})
    out = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def read(reader: StreamReader, data: bytes, cuts: list[int]) -> StreamReader:
    """Feed `data` in pieces cut at `cuts`, the i-th piece at time i."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for i, (a, b) in enumerate(itertools.pairwise(points)):
        reader.feed(data[a:b], float(i))
    reader.end(float(len(points)))
    return reader


words = st.lists(st.text(min_size=1, max_size=5), max_size=30)
cuts = st.lists(st.integers(0, 10_000), max_size=40)


@given(words, cuts)
def test_ndjson_counts_tokens_however_the_bytes_are_split(text: list[str], split: list[int]) -> None:
    reader = read(NdjsonReader(), ndjson(text, eval_count=len(text) + 7), split)
    assert reader.token_frames == len(text)
    assert reader.tokens == len(text) + 7  # the server's own count wins
    assert reader.done and reader.error is None
    assert len(reader.gaps) == max(len(text) - 1, 0)
    assert all(g >= 0 for g in reader.gaps)


@given(words, cuts, st.booleans())
def test_sse_counts_tokens_however_the_bytes_are_split(text: list[str], split: list[int], crlf: bool) -> None:
    data = sse(text, usage=len(text))
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    reader = read(SseReader(), data, split)
    assert reader.token_frames == len(text)
    assert reader.tokens == len(text)
    assert reader.done and reader.error is None


def test_first_token_time_is_when_its_frame_completed() -> None:
    data = ndjson(["Hel", "lo", "!"])
    first_end = data.index(b"\n") + 1
    reader = NdjsonReader()
    reader.feed(data[: first_end - 1], 1.0)  # the first line, without its newline yet
    assert reader.first_token is None
    reader.feed(data[first_end - 1 : first_end + 5], 2.0)
    assert reader.first_token == 2.0
    reader.feed(data[first_end + 5 :], 3.5)
    reader.end(4.0)
    assert reader.gaps == [1.5, 0.0]  # the second and third tokens arrived together
    assert reader.last_token == 3.5 and reader.tokens == 3


def test_thinking_and_tool_calls_are_tokens_and_the_final_chunk_is_not() -> None:
    reader = NdjsonReader()
    for chunk in (
        {"message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
        {"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}, "done": False},
        {"response": "x", "done": False},  # /api/generate
        {"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 3},
    ):
        reader.feed(orjson.dumps(chunk) + b"\n", 1.0)
    assert reader.token_frames == 3 and reader.done


def test_an_error_line_mid_stream_is_an_error() -> None:
    data = ndjson(["a", "b"]).split(b"\n")[0] + b"\n" + b'{"error":"model runner has unexpectedly stopped"}\n'
    reader = read(NdjsonReader(), data, [])
    assert reader.error == "model runner has unexpectedly stopped" and not reader.done


def test_sse_error_event_comments_and_a_missing_done() -> None:
    reader = read(SseReader(), b': keep-alive\n\ndata: {"error":{"message":"boom","type":"api_error"}}\n\n', [])
    assert reader.error == "boom"
    # Ollama's mid-stream failure on /v1: an empty delta, then the end without [DONE]
    truncated = read(SseReader(), sse(["a"], done=False), [5])
    assert not truncated.done and truncated.error is None


def test_completions_usage_zeros_do_not_hide_the_final_count() -> None:
    chunk = {"choices": [{"index": 0, "text": "hi", "finish_reason": None}], "usage": {"completion_tokens": 0}}
    last = {"choices": [], "usage": {"completion_tokens": 9}}
    data = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in (chunk, chunk, last)) + b"data: [DONE]\n\n"
    reader = read(SseReader(), data, [])
    assert reader.token_frames == 2 and reader.tokens == 9


def test_whole_answers() -> None:
    assert answer_tokens("ollama", b'{"message":{"content":"hi"},"done":true,"eval_count":12}') == 12
    assert answer_tokens("openai", b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":4}}') == 4
    assert answer_tokens("openai", b"not json") is None
    assert error_message(b'{"error":"model \'x\' not found"}') == "model 'x' not found"
    assert error_message(b'{"error":{"message":"slow down","type":"api_error"}}') == "slow down"
    assert error_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"


def parse_request(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    seen: dict[str, object] = {"headers": {}, "body": b""}

    class Sink:
        def on_url(self, url: bytes) -> None:
            seen["url"] = url

        def on_header(self, name: bytes, value: bytes) -> None:
            seen["headers"][name.lower()] = value  # type: ignore[index]

        def on_body(self, body: bytes) -> None:
            seen["body"] += body  # type: ignore[operator]

        def on_message_complete(self) -> None:
            seen["complete"] = True

    httptools.HttpRequestParser(Sink()).feed_data(raw)
    assert seen.get("complete"), "the request is not a whole HTTP message"
    return seen["url"], seen["headers"], seen["body"]  # type: ignore[return-value]


def test_requests_are_whole_http_messages_for_each_api() -> None:
    prompts = [Prompt(({"role": "user", "content": "hi"},), max_tokens=5), Prompt(({"role": "user", "content": "yo"},))]
    native = encode_requests(parse_target("http://h:11434", "ollama"), ["a", "b"], prompts, stream=True, key="sk-1")
    assert len(native) == 4
    url, headers, body = parse_request(native[0])
    doc = orjson.loads(body)
    assert url == b"/api/chat" and headers[b"host"] == b"h:11434" and headers[b"authorization"] == b"Bearer sk-1"
    assert doc == {
        "model": "a",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "options": {"num_predict": 5},
    }
    assert [orjson.loads(parse_request(r)[2])["model"] for r in native] == ["a", "b", "a", "b"]  # models alternate

    oa = encode_requests(parse_target("https://api.example/v1/", "openai"), ["m"], prompts, stream=True, max_tokens=9)
    url, headers, body = parse_request(oa[1])
    doc = orjson.loads(body)
    assert url == b"/v1/chat/completions" and headers[b"host"] == b"api.example" and b"authorization" not in headers
    assert doc["max_tokens"] == 9 and doc["stream_options"] == {"include_usage": True}
    plain = encode_requests(parse_target("http://h:8000", "openai"), ["m"], prompts[:1], stream=False)
    assert orjson.loads(parse_request(plain[0])[2]) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "max_tokens": 5,
    }


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://h", "http"),
        ("http://", "no host"),
        ("http://h:99999", "valid"),
        ("http://h/?x=1", "query"),
        ("h:80", "http"),
    ],
)
def test_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_target(url, "ollama")


def test_prompt_files(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    lines = [
        "Tell me a joke",
        "",
        '{"prompt": "Count to 3", "max_tokens": 20}',
        '{"messages": [{"role": "user", "content": "x"}]}',
    ]
    path.write_text("\n".join(lines) + "\n")
    prompts = read_prompts(path)
    assert [p.messages[-1]["content"] for p in prompts] == ["Tell me a joke", "Count to 3", "x"]
    assert [p.max_tokens for p in prompts] == [None, 20, None]
    for bad, reason in (
        ('{"prompt": 3}', "line 2: needs 'prompt'"),
        ('{"prompt": "x", "max_tokens": 0}', "line 2: 'max_tokens'"),
        ("{oops", "line 2: not valid JSON"),
    ):
        path.write_text("fine\n" + bad + "\n")
        with pytest.raises(ValueError, match=reason):
            read_prompts(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(path)
    with pytest.raises(ValueError, match="cannot read"):
        read_prompts(tmp_path / "missing.txt")
