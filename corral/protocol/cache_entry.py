"""A cached answer as bytes (pure): the status, the node's headers, the body in the pieces it was
relayed in (so a stream is replayed as the same frames), and the token counts a hit is charged.

Layout (big-endian): magic `CR1`, status u16, streamed u8, prompt and completion tokens i64 (-1:
unknown), then the header count u16 and each header as u16 name length, u32 value length, bytes,
then the piece count u32 and each piece as u32 length, bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

Headers = list[tuple[bytes, bytes]]

MAGIC: Final = b"CR1"
_HEAD: Final = struct.Struct(">3sHBqqH")
_HEADER: Final = struct.Struct(">HI")
_COUNT: Final = struct.Struct(">I")


class BadEntry(ValueError):
    """Bytes that are not an entry this version wrote (another version's, or damaged): a miss."""


@dataclass(slots=True)
class Entry:
    status: int
    headers: Headers
    chunks: list[bytes] = field(default_factory=list)
    streamed: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def dumps(entry: Entry) -> bytes:
    parts = [
        _HEAD.pack(
            MAGIC,
            entry.status,
            1 if entry.streamed else 0,
            -1 if entry.prompt_tokens is None else entry.prompt_tokens,
            -1 if entry.completion_tokens is None else entry.completion_tokens,
            len(entry.headers),
        )
    ]
    for name, value in entry.headers:
        parts += (_HEADER.pack(len(name), len(value)), name, value)
    parts.append(_COUNT.pack(len(entry.chunks)))
    for chunk in entry.chunks:
        parts += (_COUNT.pack(len(chunk)), chunk)
    return b"".join(parts)


def loads(data: bytes) -> Entry:
    try:
        magic, status, streamed, prompt, completion, n_headers = _HEAD.unpack_from(data, 0)
        if magic != MAGIC:
            raise BadEntry("not a cache entry")
        at = _HEAD.size
        headers: Headers = []
        for _ in range(n_headers):
            name_len, value_len = _HEADER.unpack_from(data, at)
            at += _HEADER.size
            headers.append((data[at : at + name_len], data[at + name_len : at + name_len + value_len]))
            at += name_len + value_len
        (n_chunks,) = _COUNT.unpack_from(data, at)
        at += _COUNT.size
        chunks: list[bytes] = []
        for _ in range(n_chunks):
            (size,) = _COUNT.unpack_from(data, at)
            at += _COUNT.size
            chunks.append(data[at : at + size])
            at += size
    except struct.error as exc:
        raise BadEntry(f"truncated cache entry: {exc}") from None
    if at != len(data):
        raise BadEntry("trailing bytes after a cache entry")
    return Entry(
        status, headers, chunks, bool(streamed), None if prompt < 0 else prompt, None if completion < 0 else completion
    )
