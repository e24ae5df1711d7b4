"""Reading streamed answers as they arrive: when tokens came, how many, and how the stream ended.

Two wire formats: Ollama's NDJSON (one JSON object per line, the last with `"done": true` and
`eval_count`; an `{"error": ...}` line on a failure after the start, `server/routes.go` streamResponse)
and OpenAI's server-sent events (`data: <json>` events, `data: [DONE]` at the end, usage in a final
`choices: []` chunk when `stream_options.include_usage` is asked for; Ollama's `middleware/openai.go`,
vLLM and llama.cpp's server write the same). A frame that carries text, thinking or a tool call is a
token frame; its arrival time (the caller's clock reading for the bytes it came in) drives TTFT and
the inter-token gaps. Pure: bytes and times in, counts out.
"""

from __future__ import annotations

from typing import Any

import orjson


class StreamReader:
    """Incremental reader of one streamed answer; `feed` may split frames anywhere."""

    __slots__ = ("_buf", "done", "error", "first_token", "frames", "gaps", "last_token", "token_frames", "usage_tokens")

    def __init__(self) -> None:
        self._buf = b""
        self.frames = 0
        self.token_frames = 0
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.gaps: list[float] = []  # between successive token frames, in arrival order
        self.done = False  # the stream's own end marker was seen
        self.error: str | None = None  # an error frame inside the stream
        self.usage_tokens: int | None = None  # the server's own count of output tokens

    @property
    def tokens(self) -> int:
        """Output tokens: the server's count where it gave one, else the token frames seen."""
        return self.usage_tokens if self.usage_tokens is not None else self.token_frames

    def _token(self, now: float) -> None:
        self.token_frames += 1
        if self.last_token is None:
            self.first_token = now
        else:
            self.gaps.append(now - self.last_token)
        self.last_token = now

    def feed(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def end(self, now: float) -> None:
        """The body ended (at `now`): a frame left without its terminator is still read."""


class NdjsonReader(StreamReader):
    __slots__ = ()

    def feed(self, data: bytes, now: float) -> None:
        buf = self._buf + data if self._buf else data
        start = 0
        while True:
            cut = buf.find(b"\n", start)
            if cut < 0:
                break
            if cut > start:
                self._line(buf[start:cut], now)
            start = cut + 1
        self._buf = buf[start:]

    def end(self, now: float) -> None:
        if self._buf.strip():
            self._line(self._buf, now)
        self._buf = b""

    def _line(self, line: bytes, now: float) -> None:
        self.frames += 1
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            self.error = self.error or "a stream line that is not JSON"
            return
        if not isinstance(obj, dict):
            self.error = self.error or "a stream line that is not a JSON object"
            return
        if "error" in obj:
            self.error = self.error or str(obj["error"])
            return
        if ollama_has_token(obj):
            self._token(now)
        if obj.get("done"):
            self.done = True
            count = obj.get("eval_count")
            if isinstance(count, int):
                self.usage_tokens = count


def ollama_has_token(obj: dict[str, Any]) -> bool:
    if obj.get("response") or obj.get("thinking"):
        return True
    message = obj.get("message")
    return isinstance(message, dict) and bool(
        message.get("content") or message.get("thinking") or message.get("tool_calls")
    )


class SseReader(StreamReader):
    __slots__ = ("_data",)

    def __init__(self) -> None:
        super().__init__()
        self._data: list[bytes] = []

    def feed(self, data: bytes, now: float) -> None:
        buf = self._buf + data if self._buf else data
        start = 0
        while True:
            cut = buf.find(b"\n", start)
            if cut < 0:
                break
            line = buf[start:cut]
            start = cut + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch(now)
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            # comments (": keep-alive") and other fields (event:, id:, retry:) carry no tokens
        self._buf = buf[start:]

    def end(self, now: float) -> None:
        if self._buf:
            self.feed(b"\n", now)
        self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        if not self._data:
            return
        payload = b"\n".join(self._data)
        self._data = []
        self.frames += 1
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = self.error or "an event whose data is not JSON"
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            err = obj["error"]
            message = err.get("message") if isinstance(err, dict) else err
            self.error = self.error or str(message)
            return
        usage = obj.get("usage")
        count = usage.get("completion_tokens") if isinstance(usage, dict) else None
        # /v1/completions with include_usage puts zeros on every chunk: a later real count wins
        if isinstance(count, int) and (count or self.usage_tokens is None):
            self.usage_tokens = count
        if openai_has_token(obj):
            self._token(now)


def openai_has_token(obj: dict[str, Any]) -> bool:
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and bool(
        delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content") or delta.get("tool_calls")
    )


def answer_tokens(api: str, body: bytes) -> int | None:
    """Output tokens of a whole (non-streamed) answer: Ollama's `eval_count`, OpenAI's
    `usage.completion_tokens`; None where the body does not say."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if api == "ollama":
        count = obj.get("eval_count")
    else:
        usage = obj.get("usage")
        count = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return count if isinstance(count, int) else None


def error_message(body: bytes) -> str:
    """The message of an error answer in either API's shape, else the start of the body."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(obj, dict) and "error" in obj:
        err = obj["error"]
        if isinstance(err, dict):
            return str(err.get("message", err))
        return str(err)
    return body[:200].decode("utf-8", "replace").strip()
