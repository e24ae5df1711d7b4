"""Ollama's `keep_alive` as its server reads it, and the empty requests that load or unload a model.

api.Duration.UnmarshalJSON (api/types.go): a JSON number is seconds, converted to whole nanoseconds
(`time.Duration(t * float64(time.Second))`, so a positive value under 1 ns is 0); a string is a Go
duration (time.ParseDuration: "5m", "1h30m", "250ms", "0"); a negative value of either kind means
"forever". GenerateHandler and ChatHandler (server/routes.go) unload the model when the prompt is empty
(no messages, for chat) and the duration is exactly 0, and load it when the prompt is empty otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

FOREVER = 2**63 - 1  # math.MaxInt64 nanoseconds
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
LOAD_ROUTES = frozenset({"/api/generate", "/api/chat"})


def parse_go_duration(text: str) -> int | None:
    """time.ParseDuration in nanoseconds, in Go's integer arithmetic (a fraction scaled as Go scales it,
    truncated); None where Go returns an error, an overflow of int64 nanoseconds included."""
    sign = 1
    if text[:1] in ("-", "+"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        return None
    total, pos = 0, 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None or match.group(1) in ("", "."):
            return None
        whole, _, fraction = match.group(1).partition(".")
        unit = _UNIT_NS[match.group(2)]
        value = int(whole or "0")
        if value > _LIMIT // unit:
            return None
        value *= unit
        if fraction:
            digits, scale = _leading_fraction(fraction)
            value += int(float(digits) * (float(unit) / scale))
            if value > _LIMIT:
                return None
        total += value
        if total > _LIMIT:
            return None
        pos = match.end()
    if sign > 0 and total > _LIMIT - 1:
        return None
    return sign * total


_LIMIT = 1 << 63  # time.ParseDuration's bound on the magnitude (uint64 arithmetic)


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's leadingFraction: the digits as an integer and their scale, digits past int64's range dropped."""
    value, scale, overflow = 0, 1.0, False
    for c in digits:
        if overflow:
            continue
        if value > (_LIMIT - 1) // 10:
            overflow = True
            continue
        following = value * 10 + int(c)
        if following > _LIMIT:
            overflow = True
            continue
        value = following
        scale *= 10
    return value, scale


def keep_alive_ns(value: object) -> int | None:
    """The duration Ollama holds for a `keep_alive` value; None for one it refuses (a 400 there)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no such number: Ollama never sees one ("inf" from a flag, "1e400")
    if isinstance(value, int | float):
        if value < 0:
            return FOREVER
        ns = value * 10**9
        # Past int64 nanoseconds Go's conversion has no defined value; the server accepts the number.
        return FOREVER if ns >= FOREVER else int(ns)
    if isinstance(value, str):
        parsed = parse_go_duration(value)
        if parsed is None:
            return None
        return FOREVER if parsed < 0 else parsed
    return None


def json_keep_alive(text: str | None) -> object:
    """A keep_alive written as text (a CLI flag, a placement file) for a JSON body: numbers as numbers
    (seconds: "-1" means forever), durations as strings, as Ollama reads them."""
    if text is None:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def valid_keep_alive(value: object) -> str | None:
    """The keep_alive as text when Ollama would accept it (numbers and digit strings as seconds),
    None when it would refuse it."""
    if isinstance(value, bool) or value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if keep_alive_ns(json_keep_alive(text)) is not None else None


def empty_request(doc: Mapping[str, Any], route: str) -> bool:
    """No prompt (generate) or no messages (chat): a load or an unload, not a generation."""
    if route == "/api/chat":
        return not doc.get("messages")
    return not doc.get("prompt")


def unload_requested(doc: Mapping[str, Any], route: str) -> bool:
    """What `ollama stop` sends: an empty request with keep_alive 0."""
    return (
        route in LOAD_ROUTES
        and empty_request(doc, route)
        and "keep_alive" in doc
        and keep_alive_ns(doc["keep_alive"]) == 0
    )
