"""A request body read as Ollama's server reads it: the JSON value gin's ShouldBindJSON decodes (a
json.Decoder: the first value, whatever follows it unread), then Go's struct rule (corral.protocol.gojson)
with the route's struct (corral.protocol.structs).

The parse keeps every member of every object, duplicates included, because Go's rule needs them: the
json module's C scanner with `object_pairs_hook=tuple` turns an object into a tuple of pairs (arrays
stay lists, so the two cannot be confused). Measured on a typical chat body it costs about what orjson
plus a duplicate check would, and it is exact.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple

import orjson

from corral.domain.errors import InvalidRequest
from corral.protocol.gojson import Reader, plain
from corral.protocol.structs import ROUTES

_WHITESPACE: Final = " \t\n\r"  # JSON's, which Go's scanner skips too
# A \uD800-\uDFFF escape: Python keeps a lone one as a surrogate, Go reads it as U+FFFD.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity; Go's does not


_DECODER: Final = json.JSONDecoder(object_pairs_hook=tuple, parse_constant=_refuse_constant)


class Body(NamedTuple):
    """`doc`: the body as the node reads it (json tags as keys, Go's nil left out, unknown keys as
    spelt). `exact`: every key was spelt as its tag and given once, and the text was valid UTF-8, so a
    reader that is case-sensitive (an OpenAI-type node in Python) also reads `doc`; when False, send such
    nodes `encode(doc)` instead of the client's bytes."""

    doc: dict[str, Any]
    exact: bool


def _fix(value: Any) -> Any:
    """Lone surrogates (invalid UTF-8 bytes under surrogateescape, lone \\uD8xx escapes) to U+FFFD, as
    Go's decoder replaces each invalid byte and each unpaired escape."""
    kind = type(value)
    if kind is str:
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if kind is tuple:
        return tuple((_fix(k), _fix(v)) for k, v in value)
    if kind is list:
        return [_fix(v) for v in value]
    return value


def parse(body: bytes) -> tuple[Any, bool]:
    """The first JSON value of `body` (objects as tuples of pairs) and whether its text was clean."""
    try:
        text = body.decode()
        clean = True
    except UnicodeDecodeError:
        text = body.decode(errors="surrogateescape")  # Go accepts invalid UTF-8 inside strings
        clean = False
    start = 0
    if not text or text[0] in _WHITESPACE:
        start = len(text) - len(text.lstrip(_WHITESPACE))
        if start == len(text):
            raise InvalidRequest("missing request body")  # Go's decoder meets io.EOF
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except RecursionError:
        raise InvalidRequest("invalid JSON in request body: nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequest(f"invalid JSON in request body: {exc}") from None
    if not clean or (("\\ud" in text or "\\uD" in text) and _SURROGATE_ESCAPE.search(text)):
        fixed = _fix(value)
        clean = clean and fixed == value
        value = fixed
    return value, clean


def read_body(body: bytes, route: str) -> Body:
    """The body of a request to `route` as the node will read it. InvalidRequest (a 400 naming the
    field) for what Ollama refuses (bad JSON, a value of the wrong type) and for what cannot be read
    unambiguously."""
    value, clean = parse(body)
    if value is None:
        value = ()  # Go decodes null into a struct as nothing: every field unset
    if type(value) is not tuple:
        raise InvalidRequest("request body must be a JSON object")
    struct = ROUTES.get(route)
    if struct is None:
        return Body(plain(value), clean)
    rd = Reader()
    try:
        doc = struct.decode(value, None, None, rd)
    except RecursionError:
        raise InvalidRequest("invalid JSON in request body: nested too deeply") from None
    return Body(doc, clean and rd.exact)


def encode(doc: dict[str, Any]) -> bytes:
    """`doc` as JSON bytes, for a node that must be sent the canonical form."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()
