"""An incremental Server-Sent Events decoder: bytes in any chunking, whole events out.

Pure. Follows the WHATWG event-stream rules that matter for OpenAI-compatible servers: lines end in
CRLF, LF or CR; `:` lines are comments; several `data:` lines form one event joined by LF; a blank line
dispatches; a leading BOM is skipped. Feeding the same bytes in any split gives the same events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"


class SseDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._event = b""
        self._started = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        if not self._started:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(bytes(self._buffer)):
                return []  # could still be a BOM
            self._started = True
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]
        return self._lines(final=False)

    def close(self) -> list[SseEvent]:
        """Events still held at the end of the stream: an unterminated last line, an undispatched event."""
        self._started = True
        events = self._lines(final=True)
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
        self._dispatch(events)
        return events

    def _lines(self, final: bool) -> list[SseEvent]:
        events: list[SseEvent] = []
        buffer = self._buffer
        pos = 0
        while (match := _EOL.search(buffer, pos)) is not None:
            if match.group() == b"\r" and match.end() == len(buffer) and not final:
                break  # a CR at the end may be the first half of a CRLF
            self._line(bytes(buffer[pos : match.start()]), events)
            pos = match.end()
        del buffer[:pos]
        return events

    def _line(self, line: bytes, events: list[SseEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(b":"):
            return  # a comment, e.g. ": ping" keep-alives
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value

    def _dispatch(self, events: list[SseEvent]) -> None:
        if self._data:
            data = b"\n".join(self._data).decode("utf-8", "replace")
            events.append(SseEvent(data, self._event.decode("utf-8", "replace") or "message"))
        self._data = []
        self._event = b""
