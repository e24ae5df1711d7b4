"""A /v1 stream an Ollama node breaks mid-stream ends with an error the openai client raises (issue 9,
item 10). Ollama writes an empty chunk with no model and no [DONE] (middleware/openai.go); the guard
swaps it for an error event. Checked with openai-python's own SSE decoding."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from corral.protocol.sse_errors import ERROR_MARK, OllamaSseGuard, error_event, is_ollama_error_event


def chunk(content: str, model: str = "llama3.2:1b") -> bytes:
    # The bytes Go's json.Marshal writes for openai.ChatCompletionChunk (fields in declaration order).
    return (
        b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"'
        + model.encode()
        + b'","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"content":"'
        + content.encode()
        + b'"},"finish_reason":null}]}\n\n'
    )


FINISH = (
    b'data: {"id":"chatcmpl-7","object":"chat.completion.chunk","created":1700000000,"model":"llama3.2:1b",'
    b'"system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
# What ChatWriter makes of streamResponse's {"error": ...} line once content has been sent.
OLLAMA_ERROR = chunk("", model="")
# CompleteWriter's version, for /v1/completions.
OLLAMA_COMPLETION_ERROR = (
    b'data: {"id":"cmpl-7","object":"text_completion","created":1700000000,"choices":[{"text":"","index":0,'
    b'"finish_reason":null}],"model":"","system_fingerprint":"fp_ollama"}\n\n'
)
GOOD = chunk("Hel") + chunk("lo") + FINISH + DONE
BROKEN = chunk("Hel") + chunk("lo") + OLLAMA_ERROR


def relay(stream: bytes, cuts: list[int] | None = None) -> tuple[bytes, OllamaSseGuard]:
    guard = OllamaSseGuard()
    out, start = [], 0
    for cut in sorted(set(cuts or [])):
        out.append(guard.feed(stream[start:cut]))
        start = cut
    out.append(guard.feed(stream[start:]))
    out.append(guard.end())
    return b"".join(out), guard


def read_with_openai(body: bytes, cast_to: type[Any] = ChatCompletionChunk) -> list[Any]:
    """Iterate `body` as openai-python iterates a streamed chat completion."""
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body, request=request)
    return list(openai.Stream(cast_to=cast_to, response=response, client=client))


def test_ollamas_quirk_ends_silently_for_the_openai_client() -> None:
    # Why the guard exists: without it the client sees a complete-looking answer.
    assert len(read_with_openai(BROKEN)) == 3


def test_the_error_event_replaces_it_and_the_client_raises() -> None:
    out, guard = relay(BROKEN)
    assert guard.failed and OLLAMA_ERROR not in out and out.startswith(chunk("Hel") + chunk("lo"))
    with pytest.raises(openai.APIError) as err:
        read_with_openai(out)
    assert "failed mid-stream" in err.value.message
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "upstream_midstream"


def test_completions_streams_too() -> None:
    stream = b'data: {"id":"cmpl-7","object":"text_completion","choices":[{"text":"a"}],"model":"m"}\n\n'
    out, guard = relay(stream + OLLAMA_COMPLETION_ERROR)
    assert guard.failed and is_ollama_error_event(OLLAMA_COMPLETION_ERROR)
    with pytest.raises(openai.APIError):
        read_with_openai(out, Completion)


def test_a_stream_that_stops_without_done_gets_an_error_event() -> None:
    out, guard = relay(chunk("Hel") + chunk("lo"))
    assert guard.failed and out.endswith(error_event())
    with pytest.raises(openai.APIError):
        read_with_openai(out)
    cut_mid_event, _ = relay(chunk("Hel") + chunk("lo")[:20])
    assert cut_mid_event == chunk("Hel") + error_event()


def test_a_good_stream_passes_unchanged() -> None:
    out, guard = relay(GOOD)
    assert out == GOOD and not guard.failed
    assert [c.choices[0].delta.content for c in read_with_openai(out)] == ["Hel", "lo", None]


def test_content_that_quotes_the_mark_is_not_an_error() -> None:
    # Inside a JSON string every quote is escaped, so the mark cannot occur in content.
    quoted = chunk('\\"model\\":\\"\\",\\"system_fingerprint\\":\\"fp_ollama\\"')
    assert ERROR_MARK not in quoted
    out, guard = relay(quoted + FINISH + DONE)
    assert not guard.failed and out == quoted + FINISH + DONE


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["good", "broken"]), st.lists(st.integers(0, len(GOOD)), max_size=12))
def test_the_result_does_not_depend_on_how_the_stream_was_split(kind: str, cuts: list[int]) -> None:
    stream = GOOD if kind == "good" else BROKEN
    out, guard = relay(stream, [c for c in cuts if c <= len(stream)])
    assert (out, guard.failed) == (relay(stream)[0], kind == "broken")
