"""Embedding answers taken apart per input and put together again, byte for byte (pure).

A vector is kept as the node wrote it: Ollama's encoding/json prints a float32 with the fewest digits
that read back to the same float32 (strconv.AppendFloat(f, 'f'/'e', -1, 32)), which Python cannot
reproduce from a float64; re-printing would change the bytes. So the answer is scanned for the byte
span of each vector, and a batch is rebuilt by splicing spans into the node's own answer for the
inputs it computed, or, when every input was cached, into the shape Ollama's Go structs write
(api.EmbedResponse, api.EmbeddingResponse, openai.EmbeddingList in openai/openai.go).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

_DECODER: Final = json.JSONDecoder()
_WS: Final = " \t\n\r"
_GO_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class Malformed(ValueError):
    """The node's answer is not the shape its route promises."""


def _ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _value(text: str, i: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, i)
    except ValueError as exc:
        raise Malformed(f"invalid JSON at {i}: {exc}") from None


# Fast paths for what embedding answers are made of, so a vector is scanned once by a regex instead of
# decoded into floats: a list of numbers, a list of such lists, a string (base64).
_NUMS: Final = re.compile(r"\[[-+0-9.eE,\s]*\]")
_LISTS: Final = re.compile(r"\[\s*(?:\[[-+0-9.eE,\s]*\]\s*(?:,\s*\[[-+0-9.eE,\s]*\]\s*)*)?\]")
_STRING: Final = re.compile(r'"[A-Za-z0-9+/=]*"')
_SKIPPED: Final = object()  # a value passed over by a fast path: its span is known, its value unread


def _span(text: str, i: int) -> tuple[Any, int]:
    """A value's end (and the value, unless a fast path passed over it)."""
    first = text[i : i + 1]
    if first == "[":
        m = _NUMS.match(text, i) or _LISTS.match(text, i)
        if m is not None:
            return _SKIPPED, m.end()
    elif first == '"':
        m = _STRING.match(text, i)
        if m is not None:
            return _SKIPPED, m.end()
    return _value(text, i)


def _members(text: str, i: int) -> Iterator[tuple[str, int, int, Any]]:
    """An object's members from `text[i]` ('{'): (key, value start, value end, value)."""
    i = _ws(text, i)
    if text[i : i + 1] != "{":
        raise Malformed("expected an object")
    i = _ws(text, i + 1)
    if text[i : i + 1] == "}":
        return
    while True:
        key, i = _value(text, i)
        i = _ws(text, i)
        if text[i : i + 1] != ":" or not isinstance(key, str):
            raise Malformed("expected a member")
        start = _ws(text, i + 1)
        value, end = _span(text, start)
        yield key, start, end, value
        i = _ws(text, end)
        if text[i : i + 1] == ",":
            i = _ws(text, i + 1)
            continue
        if text[i : i + 1] == "}":
            return
        raise Malformed("expected , or }")


def _elements(text: str, i: int) -> list[tuple[int, int]]:
    """The spans of an array's elements, the array starting at `text[i]` ('[')."""
    if text[i : i + 1] != "[":
        raise Malformed("expected an array")
    spans: list[tuple[int, int]] = []
    i = _ws(text, i + 1)
    if text[i : i + 1] == "]":
        return spans
    while True:
        _, end = _span(text, i)
        spans.append((i, end))
        i = _ws(text, end)
        if text[i : i + 1] == ",":
            i = _ws(text, i + 1)
            continue
        if text[i : i + 1] == "]":
            return spans
        raise Malformed("expected , or ]")


def _member(text: str, key: str, start: int = 0) -> tuple[int, int, Any]:
    for name, begin, end, value in _members(text, start):
        if name == key:
            return begin, end, value
    raise Malformed(f"no {key!r} in the answer")


@dataclass(frozen=True, slots=True)
class Split:
    """A node's answer, its vectors cut out: `items` (each vector's bytes as written), and the answer
    around them, for splicing a whole batch back in."""

    kind: str
    text: str  # the whole answer
    span: tuple[int, int]  # where the list of vectors (or the one vector) sits in `text`
    items: tuple[bytes, ...]
    item_template: tuple[str, str, str] | None = None  # /v1: around the vector, and before the index
    item_tail: str = ""


def split(kind: str, body: bytes) -> Split:
    """Cut a 200 answer of route kind `kind` (see cache_keys.EmbedPlan) into its vectors."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise Malformed("the answer is not UTF-8") from None
    if kind == "embeddings":
        begin, end, _ = _member(text, "embedding")
        if text[begin] != "[":
            raise Malformed("embedding is not a list")
        return Split(kind, text, (begin, end), (text[begin:end].encode(),))
    if kind == "embed":
        begin, end, _ = _member(text, "embeddings")
        if text[begin] != "[":
            raise Malformed("embeddings is not a list")
        items = tuple(text[a:b].encode() for a, b in _elements(text, begin))
        return Split(kind, text, (begin, end), items)
    begin, end, _ = _member(text, "data")
    if text[begin] != "[":
        raise Malformed("data is not a list")
    items_list: list[bytes] = []
    template: tuple[str, str, str] | None = None
    tail = ""
    for a, b in _elements(text, begin):
        vector = index = None
        for name, vb, ve, _ in _members(text, a):
            if name == "embedding":
                vector = (vb, ve)
            elif name == "index":
                index = (vb, ve)
        if vector is None or index is None or index[0] < vector[1]:
            raise Malformed("a data item without embedding before index")
        items_list.append(text[vector[0] : vector[1]].encode())
        if template is None:
            template = (text[a : vector[0]], text[vector[1] : index[0]], "")
            tail = text[index[1] : b]
    return Split(kind, text, (begin, end), tuple(items_list), template, tail)


def go_string(value: str) -> str:
    """A JSON string as Go's encoding/json writes it (HTML-safe escapes)."""
    out = json.dumps(value, ensure_ascii=False)
    if any(c in out for c in _GO_ESCAPES):
        out = "".join(_GO_ESCAPES.get(c, c) for c in out)
    return out


_V1_ITEM: Final = ('{"object":"embedding","embedding":', ',"index":', "")
_V1_TAIL: Final = "}"


def _v1_items(items: Sequence[bytes], template: tuple[str, str, str], tail: str) -> str:
    head, middle, _ = template
    return ",".join(f"{head}{item.decode()}{middle}{i}{tail}" for i, item in enumerate(items))


def assemble(kind: str, items: Sequence[bytes], around: Split | None, model: str) -> bytes:
    """The answer for a whole batch: `items` in the request's order, spliced into `around` (the node's
    answer for the inputs it computed: its counts and durations are kept) or, with no node answer,
    into the shape Ollama writes (zero counts and durations: Go's omitempty leaves them out)."""
    if kind == "embeddings":
        (item,) = items
        if around is None:
            return b'{"embedding":' + item + b"}"
        text = around.text
        return (text[: around.span[0]] + item.decode() + text[around.span[1] :]).encode()
    if kind == "embed":
        vectors = "[" + ",".join(i.decode() for i in items) + "]"
        if around is None:
            return f'{{"model":{go_string(model)},"embeddings":{vectors}}}'.encode()
        return (around.text[: around.span[0]] + vectors + around.text[around.span[1] :]).encode()
    template = around.item_template if around is not None and around.item_template else _V1_ITEM
    tail = around.item_tail if around is not None and around.item_template else _V1_TAIL
    data = "[" + _v1_items(items, template, tail) + "]"
    if around is None:
        usage = '"usage":{"prompt_tokens":0,"total_tokens":0}'
        # The openai middleware writes with json.NewEncoder(w).Encode: a newline ends the body.
        return f'{{"object":"list","data":{data},"model":{go_string(model)},{usage}}}\n'.encode()
    return (around.text[: around.span[0]] + data + around.text[around.span[1] :]).encode()
