"""A /v1 SSE stream from an Ollama node that fails mid-stream, turned into one the openai client raises on.

When the runner fails after the first chunk, the handler writes `{"error": "..."}` as the next NDJSON
line (streamResponse in server/routes.go). On /v1 that line goes through ChatWriter / CompleteWriter
(middleware/openai.go), which decode it as an api.ChatResponse / api.GenerateResponse: the error field
is unknown there, so the result is an empty response with no model, written as an ordinary chunk with
an empty delta (or empty text), and the stream ends without `data: [DONE]`. The openai client then ends
the stream silently, as if the answer were complete. Every chunk of a real answer names its model, so
`"model":""` next to Ollama's `"system_fingerprint":"fp_ollama"` marks that event.

`OllamaSseGuard` sits in the relay: it passes whole events through untouched (holding back only an
event split across reads until its end arrives), drops the marked event and writes an error event in
its place, and at the end adds one if the stream stopped without `[DONE]`.
"""

from __future__ import annotations

from typing import Final

from corral.domain.errors import ErrorKind
from corral.protocol import wire

# Go's json.Marshal field order: ChatCompletionChunk and CompletionChunk (openai/openai.go) both write
# "model" then "system_fingerprint".
ERROR_MARK: Final = b'"model":"","system_fingerprint":"fp_ollama"'
_EVENT_END: Final = b"\n\n"
_DONE: Final = b"data: [DONE]"
MIDSTREAM_MESSAGE: Final = "the node failed mid-stream (Ollama does not say why on /v1 streams)"


def is_ollama_error_event(event: bytes) -> bool:
    """Whether an SSE event from an Ollama node is the empty chunk that stands for a mid-stream error."""
    return ERROR_MARK in event


def error_event(message: str = MIDSTREAM_MESSAGE) -> bytes:
    """The event to end a failed stream with: openai-python raises APIError on it."""
    return wire.sse_error_event(message, ErrorKind.UPSTREAM_MIDSTREAM.value)


class OllamaSseGuard:
    """Feed it each chunk of an Ollama node's /v1/chat/completions or /v1/completions stream; relay what
    it returns. `failed` tells the relay to record an upstream_midstream error."""

    __slots__ = ("_last", "_pending", "failed")

    def __init__(self) -> None:
        self._pending = b""  # the start of an event whose end has not arrived
        self._last = b""  # the last whole events relayed, to see [DONE]
        self.failed = False

    def feed(self, data: bytes) -> bytes:
        if self.failed:
            return b""  # nothing follows Ollama's error event; drop anything that does
        buf = self._pending + data if self._pending else data
        at = buf.find(ERROR_MARK)
        if at >= 0:
            self.failed = True
            self._pending = b""
            start = buf.rfind(b"data:", 0, at)
            return buf[: max(start, 0)] + error_event()
        if buf.endswith(_EVENT_END):
            self._pending = b""
            self._last = buf
            return buf
        cut = buf.rfind(_EVENT_END)
        if cut < 0:
            self._pending = buf
            return b""
        cut += len(_EVENT_END)
        self._pending = buf[cut:]
        self._last = buf[:cut]
        return self._last

    def end(self) -> bytes:
        """The node's stream ended: what is left to relay (an error event if it never finished)."""
        if self.failed:
            return b""
        rest, self._pending = self._pending, b""
        if _DONE in self._last or _DONE in rest:
            return rest
        self.failed = True
        return error_event()  # an event cut short is dropped: the client could not parse it
