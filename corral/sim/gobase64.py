"""Go's base64.StdEncoding decoder, for where Ollama decodes base64: `[]byte` fields such as
api.ImageData (encoding/json), and DecodeString in openai/openai.go and anthropic/anthropic.go."""

from __future__ import annotations

_B64 = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def base64_error(text: str) -> int | None:
    """Where Go's base64.StdEncoding rejects `text` (the N of `illegal base64 data at input byte
    N`), or None when it decodes. CR and LF are skipped anywhere; padding is required."""
    data, si, n = text.encode("utf-8", "surrogatepass"), 0, len(text.encode("utf-8", "surrogatepass"))
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            c = data[si]
            si += 1
            if c in _B64:
                j += 1
                continue
            if c in (10, 13):
                continue
            if c != 61 or j < 2:  # not "=", or padding too early
                return si - 1
            if j == 2:  # "==" expected: the second one may follow newlines
                while si < n and data[si] in (10, 13):
                    si += 1
                if si == n:
                    return n
                if data[si] != 61:
                    return si - 1
                si += 1
            while si < n and data[si] in (10, 13):
                si += 1
            return si if si < n else None  # anything after the padding is garbage
    return None
