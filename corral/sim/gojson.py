"""Request bodies read the way Ollama's Go server reads them: gin's `ShouldBindJSON`, i.e. a
`json.Decoder` from Go's encoding/json decoding one value into the handler's request struct.

The rules kept here (all from Go's encoding/json, as Ollama's handlers in server/routes.go,
middleware/openai.go and middleware/anthropic.go use it):

- Only the first JSON value is read; bytes after it are ignored (json.Decoder.Decode). An empty
  body is io.EOF, which the handlers answer `missing request body`.
- An object key names a struct field by exact match first, else case-insensitively with Unicode
  simple folding (`ſ` U+017F matches s, `K` U+212A matches k). Unknown keys are ignored. When
  several keys name one field, each is decoded in order, so the last one wins; a map field
  (`options`) or a struct field is decoded into the value already there, so their keys merge.
  Map keys (`options`) are matched exactly: they are data, not field names.
- `null` leaves a string, number, bool or struct field unchanged and clears a pointer, slice,
  map or interface field.
- A value of the wrong JSON type is an UnmarshalTypeError: decoding goes on and the first such
  error is returned at the end, worded `json: cannot unmarshal <kind> into Go struct field
  <Struct>.<path> of type <type>`. A number with a fraction or exponent for an int field is
  `number <literal>`.
- `[]byte` fields (api.ImageData) are standard, padded base64; a bad one is the base64 package's
  `illegal base64 data at input byte N`, saved like a type error.
- A type with its own UnmarshalJSON (Duration, ThinkValue, Message) returns its error at once;
  Message decodes through a local alias type, so its inner type errors carry the outer field path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.sim.gobase64 import base64_error
from corral.sim.wire import BadRequest

# Runes that Unicode simple case folding puts in the same orbit as an ASCII letter.
_FOLD = {"\u017f": "S", "\u212a": "K"}
_INT64 = range(-(2**63), 2**63)


class Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs, duplicates and order kept (Go sees every pair)."""


class GoFloat(float):
    """A JSON number written with a fraction or exponent; keeps its text for Go's error messages."""

    text: str

    def __new__(cls, text: str) -> GoFloat:
        value = super().__new__(cls, text)
        value.text = text
        return value


@dataclass(frozen=True)
class GoType:
    """A Go type as the decoder sees it. `name` is how Go prints it in errors."""

    kind: str  # string bool int float any raw map bytes slice ptr struct custom
    name: str
    elem: GoType | None = None
    fields: Mapping[str, GoType] = field(default_factory=dict)
    check: Callable[[Any], Any] | None = None  # custom: converts the value or raises BadRequest
    pairs: bool = False  # custom: `check` gets objects as Pairs (to decode them with decode_value)
    alias: str = ""  # struct with its own UnmarshalJSON through this local alias type
    lower: tuple[str, ...] = ()  # string fields that UnmarshalJSON lower-cases


STRING = GoType("string", "string")
BOOL = GoType("bool", "bool")
INT = GoType("int", "int")
FLOAT64 = GoType("float", "float64")
FLOAT32 = GoType("float", "float32")
ANY = GoType("any", "interface {}")
RAW = GoType("raw", "json.RawMessage")
MAP = GoType("map", "map[string]interface {}")


def _same(value: Any) -> Any:
    return value


def ptr(t: GoType) -> GoType:
    return GoType("ptr", t.name, elem=t)


def slice_of(t: GoType, name: str | None = None) -> GoType:
    return GoType("slice", name or "[]" + t.name, elem=t)


def struct(name: str, fields: Mapping[str, GoType], alias: str = "", lower: tuple[str, ...] = ()) -> GoType:
    """`name` is the package-qualified type name, e.g. `api.GenerateRequest`."""
    return GoType("struct", name, fields=fields, alias=alias, lower=lower)


def custom(name: str, check: Callable[[Any], Any], pairs: bool = False) -> GoType:
    return GoType("custom", name, check=check, pairs=pairs)


# A json.RawMessage kept as parsed (objects as Pairs), for a custom decoder to decode further.
RAW_PAIRS = GoType("custom", "json.RawMessage", check=_same, pairs=True)


def fold(name: str) -> str:
    return "".join(_FOLD.get(c, c.upper() if c.isascii() else c) for c in name)


def match_field(key: str, fields: Mapping[str, GoType]) -> str | None:
    """The struct field a JSON key names: exact match first, else the case-folded one."""
    if key in fields:
        return key
    folded = fold(key)
    return next((f for f in fields if fold(f) == folded), None)


def plain(value: Any) -> Any:
    """A decoded value as an `interface{}` field holds it: objects as dicts (last key wins)."""
    if isinstance(value, Pairs):
        return {k: plain(v) for k, v in value}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, GoFloat):
        return float(value)
    return value


def _kind(value: Any) -> str:
    if isinstance(value, Pairs | dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "bool" if isinstance(value, bool) else "number"


class _TypeError(Exception):
    def __init__(self, what: str, type_name: str, struct_name: str = "", path: str = "") -> None:
        super().__init__(what)
        self.what, self.type_name, self.struct_name, self.path = what, type_name, struct_name, path

    def __str__(self) -> str:
        where = f"struct field {self.struct_name}.{self.path}" if self.struct_name or self.path else "value"
        return f"json: cannot unmarshal {self.what} into Go {where} of type {self.type_name}"


class _Abort(Exception):
    """An error a custom UnmarshalJSON returned: decoding stops at once."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Decoder:
    def __init__(self) -> None:
        self.saved: Exception | None = None
        self.path: list[str] = []
        self.struct = ""

    def save(self, error: Exception) -> None:
        if self.saved is None:
            self.saved = error

    def type_error(self, what: str, t: GoType) -> None:
        self.save(_TypeError(what, t.name, self.struct, ".".join(self.path)))

    def value(self, v: Any, t: GoType, prev: Any) -> Any:
        if v is None:
            # null: no-op for plain values and structs, nil for pointers, slices, maps, interfaces.
            return prev if t.kind in ("string", "bool", "int", "float", "struct") else None
        if t.kind == "ptr":
            assert t.elem is not None
            return self.value(v, t.elem, prev)
        if t.kind in ("any", "raw"):
            return plain(v)
        if t.kind == "custom":
            assert t.check is not None
            try:
                return t.check(v if t.pairs else plain(v))
            except GoDecodeError as exc:
                raise _Abort(exc.error) from None
            except BadRequest as exc:
                raise _Abort(exc) from None
        ok = {
            "string": isinstance(v, str),
            "bool": isinstance(v, bool),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "float": isinstance(v, int | float) and not isinstance(v, bool),
            "map": isinstance(v, Pairs),
            "bytes": isinstance(v, str),
            "slice": isinstance(v, list) and not isinstance(v, Pairs),
            "struct": isinstance(v, Pairs),
        }[t.kind]
        if (t.kind == "int" and ok and v not in _INT64) or (t.kind == "int" and isinstance(v, GoFloat)):
            self.type_error(f"number {v.text if isinstance(v, GoFloat) else v}", t)  # strconv.ParseInt fails
            return prev
        if not ok:
            if t.kind == "struct" and t.alias:  # the alias type's own Unmarshal fails at once
                raise _Abort(_TypeError(_kind(v), t.alias))
            self.type_error(_kind(v), t)
            return prev
        if t.kind == "map":
            merged = dict(prev) if isinstance(prev, dict) else {}
            merged.update((k, plain(x)) for k, x in v)
            return merged
        if t.kind == "bytes":
            offset = base64_error(v)
            if offset is not None:
                self.save(ValueError(f"illegal base64 data at input byte {offset}"))
            return v
        if t.kind == "slice":
            assert t.elem is not None
            return [self.value(x, t.elem, {} if t.elem.kind == "struct" else None) for x in v]
        if t.kind == "struct":
            return self.struct_value(v, t, prev)
        return plain(v)

    def struct_value(self, pairs: Pairs, t: GoType, prev: Any) -> dict[str, Any]:
        if t.alias:  # decoded by its own UnmarshalJSON: a fresh decoder whose first error aborts
            inner = _Decoder()
            out = inner.fields(pairs, t, {})
            if inner.saved is not None:
                raise _Abort(inner.saved)
            for name in t.lower:
                if isinstance(out.get(name), str):
                    out[name] = out[name].lower()
            return out
        return self.fields(pairs, t, dict(prev) if isinstance(prev, dict) else {})

    def fields(self, pairs: Pairs, t: GoType, out: dict[str, Any]) -> dict[str, Any]:
        struct_name = t.alias.rpartition(".")[2] if t.alias else t.name.rpartition(".")[2]
        for key, v in pairs:
            name = match_field(key, t.fields)
            if name is None:
                continue
            saved = (len(self.path), self.struct)
            self.path.append(name)
            self.struct = struct_name
            value = self.value(v, t.fields[name], out.get(name))
            if value is None:
                out.pop(name, None)  # nil and absent read the same
            else:
                out[name] = value
            del self.path[saved[0] :]
            self.struct = saved[1]
        return out


def _syntax_error(text: str, exc: json.JSONDecodeError) -> str:
    """Go's decoder message for the common kinds of malformed JSON."""
    if exc.pos >= len(text.rstrip()):
        return "unexpected EOF"
    char = text[exc.pos]
    if exc.msg.startswith("Expecting ',' delimiter"):
        where = "after object key:value pair" if text.lstrip().startswith("{") else "after array element"
    elif exc.msg.startswith("Expecting property name"):
        where = "looking for beginning of object key string"
    elif exc.msg.startswith("Expecting ':' delimiter"):
        where = "after object key"
    else:
        where = "looking for beginning of value"
    return f"invalid character {char!r} {where}"


def first_value(body: bytes) -> Any:
    """The first JSON value of the body (json.Decoder.Decode), objects as Pairs."""
    text = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    if not text:
        raise BadRequest(400, "missing request body")
    decoder = json.JSONDecoder(object_pairs_hook=Pairs, parse_float=GoFloat)
    try:
        value, _ = decoder.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(400, _syntax_error(text, exc)) from exc
    except RecursionError as exc:
        raise BadRequest(400, "exceeded max depth") from exc
    return value


def decode(body: bytes, t: GoType) -> dict[str, Any]:
    """The request struct `t` as Go fills it from `body`, as a dict keyed by the fields' JSON
    names; raises BadRequest(400, <Go's message>) where the Go handler's bind fails."""
    value = first_value(body)
    decoder = _Decoder()
    if not isinstance(value, Pairs):
        raise BadRequest(400, str(_TypeError(_kind(value), t.name)))
    try:
        out = decoder.struct_value(value, t, {})
    except _Abort as abort:
        error = abort.error
        if isinstance(error, _TypeError) and decoder.path:
            # Go's addErrorContext: the outer field path replaces the alias type's own.
            error.struct_name, error.path = decoder.struct, ".".join(decoder.path)
        raise BadRequest(400, str(error)) from None
    if decoder.saved is not None:
        raise BadRequest(400, str(decoder.saved))
    return out


class GoDecodeError(BadRequest):
    """A 400 from decode_value that keeps Go's error, so an enclosing decode can add its context."""

    def __init__(self, error: Exception) -> None:
        super().__init__(400, str(error))
        self.error = error


def decode_value(value: Any, t: GoType) -> Any:
    """`value` (as parsed, objects as Pairs) decoded into `t` on its own, as a custom
    UnmarshalJSON's inner json.Unmarshal does; raises GoDecodeError with Go's message."""
    decoder = _Decoder()
    if not isinstance(value, Pairs) and t.kind == "struct" and value is not None:
        raise GoDecodeError(_TypeError(_kind(value), t.name))
    try:
        out = decoder.value(value, t, None)
    except _Abort as abort:
        raise GoDecodeError(abort.error) from None
    if decoder.saved is not None:
        raise GoDecodeError(decoder.saved)
    return out


def type_error(value: Any, type_name: str) -> GoDecodeError:
    """Go's error for `value` decoded into a type it does not fit, outside any struct."""
    return GoDecodeError(_TypeError(_kind(value), type_name))


def kind_of(value: Any) -> str:
    """The JSON kind Go names in its errors: string, number, bool, array, object."""
    return _kind(value)
