"""Go's encoding/json decoding rule, applied to a parsed body so Corral reads the fields Ollama will read.

Ollama binds request bodies with gin's ShouldBindJSON (server/routes.go, middleware/openai.go): a
json.Decoder reads the first JSON value into a Go struct (api/types.go, openai/openai.go). Its rule:
- an object key selects a struct field when it equals the field's json tag under simple Unicode case
  folding (bytes.EqualFold): "Model" and "MODEL" are `model`; "ſtream" (U+017F) is `stream`, "\u212aeep_alive"
  (Kelvin sign) is `keep_alive`. Members are taken in order, so the last match wins;
- `null` leaves a string, number, bool or struct field as it was, and sets a pointer, map, slice or
  interface to nil;
- an object decoded again into the same struct or map merges into it; an array decoded again into a
  slice reuses its elements. Past the old length, what it finds depends on the Go release's slice growth,
  so a body that reaches there is refused as ambiguous;
- map keys (`options` is map[string]any) are kept exactly;
- a value of the wrong type fails the whole request (Ollama answers 400).

Objects arrive as tuples of (key, value) pairs (duplicates kept, see corral.protocol.body); the result is
plain JSON: dicts keyed by the json tags, unknown keys kept as spelt, Go's nil left out. Structs and
slices are here; scalars, maps and raw values in corral.protocol.gotypes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from corral.domain.errors import InvalidRequest

# A location in the body, built as a linked (parent, key) pair and rendered only for an error message.
Path = tuple[Any, str | int] | None


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()  # a field Go holds as nil (or never set): left out of the document


def fold(key: str) -> str:
    """The key as Go compares it with an ASCII tag: U+212A lowers to 'k' already, U+017F must be told."""
    if key.isascii():
        return key.lower()
    return key.lower().replace("ſ", "s")


def render(path: Path) -> str:
    parts: list[str | int] = []
    while path is not None:
        path, key = path
        parts.append(key)
    out = ""
    for part in reversed(parts):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(body)"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "an object"
    )


def type_error(path: Path, expected: str, value: Any) -> InvalidRequest:
    field = render(path)
    return InvalidRequest(f"{field}: must be {expected}, not {_kind(value)}", param=field)


def plain(value: Any) -> Any:
    """A parsed value as Go's interface{} holds it: objects become dicts (the last duplicate wins)."""
    kind = type(value)
    if kind is tuple:
        return {k: plain(v) for k, v in value}
    if kind is list:
        kinds = set(map(type, value))
        if tuple in kinds or list in kinds:
            return [plain(v) for v in value]
    return value


class Reader:
    """State of one read: whether every key was canonical and given once, and slices' reused lengths."""

    __slots__ = ("backing", "exact", "keep")

    def __init__(self) -> None:
        self.exact = True
        self.backing: dict[int, int] = {}
        self.keep: list[Any] = []  # lists whose id() keys `backing`, kept alive for the read


class GoType:
    __slots__ = ()
    # The Python type of a JSON value the field takes as it is, with nothing to check (str, bool).
    as_is: type | None = None

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        """The field's new value (ABSENT for nil) after Go decodes `value` into it holding `prev`."""
        raise NotImplementedError

    def replaces(self, value: Any) -> bool:
        """Whether decoding `value` overwrites the whole previous value (so a stale one cannot show)."""
        return True

    def zero(self) -> Any:
        """The element a slice holds where Go keeps its zero value."""
        return None


class Slice(GoType):
    """[]T. Decoding an array into it again reuses its elements (structs merge); an empty array is a
    new empty slice; null is nil."""

    __slots__ = ("elem",)

    def __init__(self, elem: GoType) -> None:
        self.elem = elem

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        if type(value) is not list:
            if value is None:
                return ABSENT
            raise type_error(path, "an array", value)
        if not value:
            return []
        elem = self.elem
        live = backing = 0
        if type(prev) is list:
            live = len(prev)
            backing = rd.backing.get(id(prev), live)
        out = []
        for i, item in enumerate(value):
            if i < live:
                got = elem.decode(item, prev[i], (path, i), rd)
            else:
                if i < backing and not elem.replaces(item):
                    field = render(path)
                    raise InvalidRequest(
                        f"{field}: given more than once with a shorter array between; what Ollama reads then "
                        "depends on its Go release, so send the field once",
                        param=field,
                    )
                got = elem.decode(item, ABSENT, (path, i), rd)
            out.append(elem.zero() if got is ABSENT else got)
        if backing > len(out):
            rd.backing[id(out)] = backing
            rd.keep.append(out)
        return out

    def replaces(self, value: Any) -> bool:
        return value is None


class Struct(GoType):
    """A Go struct: keys matched to json tags by Go's folding, decoded in order (the last match wins).
    `replace` marks a type whose UnmarshalJSON decodes into a fresh value (api.Message); `after` is
    what that method does next (lower-cases Message.Role); `ptr` for *T."""

    __slots__ = ("after", "direct", "fields", "folded", "name", "ptr", "replace")

    def __init__(
        self,
        name: str,
        fields: Mapping[str, GoType],
        *,
        replace: bool = False,
        ptr: bool = False,
        after: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.name = name
        self.fields = dict(fields)
        self.folded = {fold(tag): tag for tag in self.fields}
        self.direct: dict[str, type] = {tag: t.as_is for tag, t in self.fields.items() if t.as_is is not None}
        self.replace = replace
        self.ptr = ptr
        self.after = after

    def decode(self, value: Any, prev: Any, path: Path, rd: Reader) -> Any:
        if type(value) is not tuple:
            if value is None:
                if self.ptr:
                    return ABSENT
                return {} if self.replace else prev
            raise type_error(path, "an object", value)
        out: dict[str, Any] = prev if type(prev) is dict and not self.replace else {}
        fields, direct = self.fields, self.direct
        for key, item in value:
            if direct.get(key) is type(item) and key not in out:
                out[key] = item  # the common case: a string or bool field, spelt as its tag, given once
                continue
            if key in fields:
                tag = key
            else:
                found = self.folded.get(fold(key))
                if found is None:
                    out[key] = plain(item)  # unknown to Ollama: kept as spelt, never read as a field
                    continue
                tag = found
                rd.exact = False
            old = out.get(tag, ABSENT)
            if old is not ABSENT:
                rd.exact = False
            new = fields[tag].decode(item, old, (path, tag), rd)
            if new is ABSENT:
                out.pop(tag, None)
            else:
                out[tag] = new
        if self.after is not None:
            self.after(out)
        return out

    def replaces(self, value: Any) -> bool:
        return self.replace or (value is None and self.ptr)

    def zero(self) -> Any:
        return {}
