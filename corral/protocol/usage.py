"""Token accounting for an answer as it is relayed: the node's own counts when it gave them, else a
count of what went to the client.

The relay feeds every chunk to a `UsageMeter`; each feed costs one bytes.count over the chunk plus
constant work (the last few KiB are kept as a list of chunks, never copied per chunk, and a stream's
list is trimmed once it holds twice that, not chunk by chunk). At the end,
`counts()` reads the node's numbers from the final chunk: native `prompt_eval_count`, `eval_count` and
`load_duration` (api.Metrics in api/types.go), OpenAI `usage` (openai/openai.go), Anthropic and
Responses `input_tokens`/`output_tokens`. A stream that ended before its final chunk (the client or
the node left) has none, and Ollama's /v1 streams carry usage only with
`stream_options.include_usage`: then completion tokens are counted from what was relayed.
"""

from __future__ import annotations

import re
from collections import deque
from enum import Enum
from typing import Any, Final, NamedTuple

import orjson

from corral.protocol.prompts import BYTES_PER_TOKEN

TAIL: Final = 4096  # the final chunk's counts are in its last bytes (api.Metrics follows the content)
WHOLE_LIMIT: Final = 1 << 20  # a non-streamed answer kept for a text-length estimate, up to this size
_PROMPT: Final = re.compile(rb'"(?:prompt_eval_count|prompt_tokens|input_tokens)":\s*(\d+)')
_COMPLETION: Final = re.compile(rb'"(?:eval_count|completion_tokens|output_tokens)":\s*(\d+)')
_LOAD: Final = re.compile(rb'"load_duration":\s*(\d+)')
# The last event of a finished stream: Ollama's NDJSON, OpenAI's SSE, Anthropic's, the Responses API's.
_NDJSON_FINAL: Final = b'"done":true'
_SSE_FINALS: Final = (b"[DONE]", b"message_stop", b"response.completed")
# SSE events that carry no token: the finish chunk, the usage chunk, [DONE], an empty delta.
_SSE_EMPTY: Final = (b"[DONE]", b'"delta":{}', b'"choices":[]', b'"content":""', b'"text":""')
_TEXT_KEYS: Final = frozenset({"response", "content", "text", "thinking", "reasoning"})
_WHITESPACE: Final = frozenset(b" \t\n\r\x0b\x0c")  # the bytes that \s matches in a bytes pattern
_COLON: Final = ord(":")


class Framing(Enum):
    NDJSON = b"\n"  # Ollama's native stream: one chunk (one token) per line
    SSE = b"\ndata:"  # OpenAI's and Anthropic's streams: one event per token (content cannot hold a raw \n)
    JSON = b""  # a whole answer

    @classmethod
    def of(cls, content_type: bytes | None) -> Framing:
        """The framing of an answer with this Content-Type (a node sends the same few, answer after
        answer: each is parsed once)."""
        found = _FRAMING_OF.get(content_type)
        if found is None:
            kind = (content_type or b"").split(b";", 1)[0].strip().lower()
            if kind == b"application/x-ndjson":
                found = cls.NDJSON
            elif kind == b"text/event-stream":
                found = cls.SSE
            else:
                found = cls.JSON
            if len(_FRAMING_OF) >= 64:  # bounded: the header's value is the node's to choose
                _FRAMING_OF.clear()
            _FRAMING_OF[content_type] = found
        return found


_FRAMING_OF: dict[bytes | None, Framing] = {}


class Counts(NamedTuple):
    prompt_tokens: int | None  # the node's count; None when it gave none
    completion_tokens: int  # the node's count, or counted by Corral (`counted`)
    load_seconds: float | None  # the node's load_duration
    counted: bool

    def charge(self, prompt_estimate: int, admitted: int = 0) -> int:
        """Tokens to charge a limit: prompt (the node's, else the estimate) plus completion, and never
        less than what admission reserved."""
        prompt = self.prompt_tokens if self.prompt_tokens is not None else prompt_estimate
        return max(prompt + self.completion_tokens, admitted)


def _last(pattern: re.Pattern[bytes], tail: bytes, start: int) -> bytes | None:
    """The last match's group in `tail`, looked for from `start` first: no match runs across `start`
    (`_last_line`), so a match found there is the tail's last; else the whole tail is searched."""
    found: list[bytes] = pattern.findall(tail, start) if start else []
    if not found:
        found = pattern.findall(tail)
    return found[-1] if found else None


def _texts(value: Any, key: str = "") -> int:
    """Characters of answer text in a parsed answer (native response/message, OpenAI choices...)."""
    if isinstance(value, str):
        return len(value) if key in _TEXT_KEYS else 0
    if isinstance(value, dict):
        return sum(_texts(v, k) for k, v in value.items())
    if isinstance(value, list):
        return sum(_texts(v, key) for v in value)
    return 0


class UsageMeter:
    """Fed every relayed chunk; `counts()` at the end."""

    __slots__ = (
        "_chunks",
        "_edge",
        "_empty_first",
        "_first_len",
        "_keep",
        "_kept",
        "_mark",
        "_marks",
        "_slack",
        "_total",
        "framing",
    )

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        # Read once: an Enum member's `.value` is a Python-level descriptor call, too dear per chunk.
        self._mark: bytes = framing.value
        self._chunks: deque[bytes] = deque()
        self._kept = 0  # bytes in _chunks
        self._total = 0
        self._marks = 0  # newlines (NDJSON) or "data:" (SSE) relayed
        # The last bytes before this chunk, for a mark split across chunks; the stream's start counts as
        # a line start.
        self._edge = b"\n"
        self._empty_first = 0
        self._first_len = 0
        # A whole answer is kept exactly up to WHOLE_LIMIT (its text is estimated only when all of it
        # is). A stream needs only its last TAIL bytes (`_tail` slices them), so its chunks are trimmed
        # once they hold twice that: the same tail, without a trim per chunk.
        self._keep = WHOLE_LIMIT if framing is Framing.JSON else TAIL
        self._slack = WHOLE_LIMIT if framing is Framing.JSON else 2 * TAIL

    def feed(self, data: bytes) -> None:
        if not data:
            return
        mark = self._mark
        if mark:
            self._marks += data.count(mark)
            if len(mark) > 1:
                self._marks += (self._edge + data[: len(mark) - 1]).count(mark)
                edge = data if len(data) >= len(mark) - 1 else self._edge + data
                self._edge = edge[1 - len(mark) :]
                if not self._total:  # SSE's first event, for `_counted`
                    self._first_len = len(data)
                    self._empty_first = sum(data.count(e) for e in _SSE_EMPTY)
        self._total += len(data)
        self._chunks.append(data)
        self._kept += len(data)
        if self._kept > self._slack:
            keep = self._keep
            while self._kept - len(self._chunks[0]) >= keep:
                self._kept -= len(self._chunks.popleft())

    def _tail(self) -> bytes:
        tail = b"".join(self._chunks)
        return tail if self.framing is Framing.JSON else tail[-TAIL:]

    def counts(self) -> Counts:
        tail = self._tail()
        start = self._last_line(tail)
        load = _last(_LOAD, tail, start)
        load_s = int(load) / 1e9 if load is not None else None
        if self._finished(tail):
            prompt, completion = _last(_PROMPT, tail, start), _last(_COMPLETION, tail, start)
            if completion is not None:
                return Counts(int(prompt) if prompt is not None else None, int(completion), load_s, False)
            node_prompt = int(prompt) if prompt is not None else None
        else:
            node_prompt = None
        return Counts(node_prompt, self._counted(tail), load_s, True)

    def _last_line(self, tail: bytes) -> int:
        """Where a native stream's last line starts in `tail` (its final chunk, holding the counts), so
        the counts are looked for in it before the whole tail; 0 (the whole tail) where a match could
        run across that line's start (`":` then whitespace up to the newline) or for other framings."""
        if self.framing is not Framing.NDJSON:
            return 0
        start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
        end = start
        while end and tail[end - 1] in _WHITESPACE:  # the newline itself, and any whitespace before it
            end -= 1
        return 0 if end and tail[end - 1] == _COLON else start

    def _finished(self, tail: bytes) -> bool:
        if self.framing is Framing.NDJSON:
            return _NDJSON_FINAL in tail
        if self.framing is Framing.SSE:
            return any(final in tail for final in _SSE_FINALS)
        return True

    def _counted(self, tail: bytes) -> int:
        if self.framing is Framing.NDJSON:
            lines = self._marks + (bool(tail) and not tail.endswith(b"\n"))  # a line cut short carried a token
            return max(0, lines - (_NDJSON_FINAL in tail))
        if self.framing is Framing.SSE:
            empty = sum(tail.count(e) for e in _SSE_EMPTY)
            if self._total - self._first_len >= len(tail):  # the first chunk is not in the tail
                empty += self._empty_first
            return max(0, self._marks - empty)
        if not self._total:
            return 0
        if self._kept == self._total:
            try:
                return -(-_texts(orjson.loads(tail)) // BYTES_PER_TOKEN)
            except (orjson.JSONDecodeError, RecursionError):
                pass
        return -(-self._total // BYTES_PER_TOKEN)
