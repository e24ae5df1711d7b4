"""The leaf types of Go's decoding rule (corral.protocol.gojson): scalars, interface{}, raw JSON,
[]byte, maps, and the string-or-array values some Ollama types decode by hand."""

from __future__ import annotations

from typing import Any, Final

from corral.protocol.gojson import ABSENT, GoType, Path, Reader, Slice, plain, type_error

_INT64: Final = 2**63
_FLOAT64_MAX: Final = 1.7976931348623157e308
_FLOAT32_MAX: Final = 3.4028234663852886e38
_EXPECTED: Final = {
    "string": "a string",
    "bool": "a boolean",
    "int": "a 64-bit integer (no fraction or exponent)",
    "float32": "a number",
    "float64": "a number",
}


class Scalar(GoType):
    """string, bool, int (Go's int: 64-bit), float32 or float64; `ptr` for *T, which null sets to nil."""

    __slots__ = ("as_is", "kind", "ptr")

    def __init__(self, kind: str, ptr: bool = False) -> None:
        assert kind in _EXPECTED, kind
        self.kind = kind
        self.ptr = ptr
        self.as_is = {"string": str, "bool": bool}.get(kind)

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        if value is None:
            return ABSENT if self.ptr else prev
        kind, got = self.kind, type(value)
        if kind == "string":
            if got is str:
                return value
        elif kind == "bool":
            if got is bool:
                return value
        elif kind == "int":
            # Go parses an int field with strconv.ParseInt: 2.0 and 1e3 are refused.
            if got is int and -_INT64 <= value < _INT64:
                return value
        elif got is int or got is float:
            limit = _FLOAT32_MAX if kind == "float32" else _FLOAT64_MAX
            if -limit <= value <= limit:
                return value
            raise type_error(path, f"a number within {kind} range", value)
        raise type_error(path, _EXPECTED[kind], value)

    def replaces(self, value: Any) -> bool:
        return value is not None

    def zero(self) -> Any:
        return {"string": "", "bool": False}.get(self.kind, 0)


class AnyValue(GoType):
    """interface{}: any JSON value, replaced whole; null is nil."""

    __slots__ = ()
    as_is = str  # a string is kept as it is (a message's content: Struct.decode's fast path)

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        return ABSENT if value is None else plain(value)


class Raw(GoType):
    """json.RawMessage, or a type with its own UnmarshalJSON that Corral does not interpret.
    `accepts` limits the JSON types it takes; `ptr` says a null is Go's nil rather than a value."""

    __slots__ = ("accepts", "ptr", "what")

    def __init__(self, accepts: tuple[type, ...] = (), what: str = "", ptr: bool = False) -> None:
        self.accepts = accepts
        self.what = what
        self.ptr = ptr

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        if value is None:
            return ABSENT if self.ptr else None
        if self.accepts and type(value) not in self.accepts:
            raise type_error(path, self.what, value)
        return plain(value)


class Bytes(GoType):
    """[]byte (api.ImageData): a base64 string (Go also takes an array of byte values)."""

    __slots__ = ()

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        if value is None:
            return ABSENT
        if type(value) is str or type(value) is list:
            return plain(value)
        raise type_error(path, "a base64 string", value)

    def replaces(self, value: Any) -> bool:
        return type(value) is not list


class Map(GoType):
    """map[string]any (or map[string]string): keys exact; decoding into it again adds to it."""

    __slots__ = ()

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        if type(value) is tuple:
            out = prev if type(prev) is dict else {}
            for key, item in value:
                out[key] = plain(item)
            return out
        if value is None:
            return ABSENT
        raise type_error(path, "an object", value)

    def replaces(self, value: Any) -> bool:
        return value is None


class OneOf(GoType):
    """A custom UnmarshalJSON that takes a string or an array and decodes into a fresh value each time
    (openai.ResponsesInput, the content of a Responses or Anthropic message)."""

    __slots__ = ("items",)

    def __init__(self, items: Slice) -> None:
        self.items = items

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        if type(value) is str:
            return value
        if type(value) is list:
            return self.items.decode(value, None, path, rd)
        if value is None:
            return ""  # the methods unmarshal null into a string first: no error, an empty value
        raise type_error(path, "a string or an array", value)
