"""The model name in an answer, as the client spelt it: a node answering under the name it knows
(`llama3.2:3b`) for a request that asked for an alias (`gpt-4o-mini`) says `gpt-4o-mini`, as Ollama
echoes the request's own spelling (server/routes.go copies req.Model into each response).

Only the `"model"` member's value is rewritten, on the bytes as they pass: NDJSON lines and SSE events
end with a newline, so each piece is rewritten up to its last newline and only a partial frame (rare:
nodes write whole frames) waits for the next piece. A whole JSON answer is rewritten at its end.
"""

from __future__ import annotations

import orjson


class ModelEcho:
    __slots__ = ("_new", "_old", "_tail")

    def __init__(self, node_name: str, client_name: str) -> None:
        old = orjson.dumps(node_name)
        new = orjson.dumps(client_name)
        # Go's encoder writes `"model":"x"`; Python servers (OpenAI-type nodes) often `"model": "x"`.
        self._old = (b'"model":' + old, b'"model": ' + old)
        self._new = (b'"model":' + new, b'"model": ' + new)
        self._tail = b""

    def _rewrite(self, data: bytes) -> bytes:
        for old, new in zip(self._old, self._new, strict=True):
            if old in data:
                data = data.replace(old, new)
        return data

    def feed(self, data: bytes) -> bytes:
        """What can go to the client now: every complete line of `data` (and of what was held), rewritten."""
        if self._tail:
            data = self._tail + data
            self._tail = b""
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            data, self._tail = data[:cut], data[cut:]
        return self._rewrite(data) if data else b""

    def flush(self) -> bytes:
        """The rest, at the end of the answer."""
        rest, self._tail = self._tail, b""
        return self._rewrite(rest) if rest else b""
