"""Corral reads a body as Ollama's Go server does: checked against Go's encoding/json itself.

A small Go program (tests/unit/go/decode_mirror.go) decodes each body into structs with the fields and
types of Ollama's api/types.go and openai/openai.go; corral.protocol.body must agree with it on
every generated body: keys in any case and with ſ (U+017F) or K (U+212A), duplicates, nulls, nested
messages and tools, wrong types. Needs `go` (Debian golang-go, scripts/install.sh --system).
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.domain.errors import InvalidRequest
from corral.protocol import structs as S
from corral.protocol.body import read_body
from corral.protocol.gojson import GoType, Slice, Struct
from corral.protocol.gotypes import AnyValue, Bytes, Map, Raw, Scalar
from tests.unit.gomirror import Mirror, build

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs go (apt-get install golang-go)")

ROUTES = [
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/show",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
]


@pytest.fixture(scope="module")
def mirror(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: build once per run
    m = Mirror(build(cache.mkdir("go-decode-mirror") if cache else tmp_path_factory.mktemp("go-decode-mirror")))
    yield m
    m.close()


# Bodies are written by hand so that they can hold what json.dumps cannot: duplicate keys, keys
# spelt in other cases or with escapes.


class Obj:
    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def dump(value: Any, escape: bool) -> str:
    if isinstance(value, Obj):
        return "{" + ",".join(f"{dump(k, escape)}: {dump(v, escape)}" for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v, escape) for v in value) + "]"
    return json.dumps(value, ensure_ascii=escape)


def spellings(tag: str) -> st.SearchStrategy[str]:
    def variants(c: str) -> list[str]:
        out = [c, c.upper(), c.lower()]
        if c in "sS":
            out.append("ſ")
        if c in "kK":
            out.append("\u212a")
        return out

    exact = st.just(tag)
    varied = st.tuples(*[st.sampled_from(variants(c)) for c in tag]).map("".join)
    return st.one_of(exact, exact, varied)


TEXT = st.one_of(
    st.text(alphabet='abcXYZ é😀\n"\\', max_size=6),
    st.sampled_from(["\ud800", "a\udc00b", "USER", "Assistant", "ſ", "\u212a"]),
)
SAFE_INT = st.integers(-(2**53), 2**53)
any_values = st.recursive(
    st.none() | st.booleans() | SAFE_INT | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(st.tuples(st.sampled_from(["a", "A", "b", "num_ctx", "NUM_CTX"]), inner), max_size=3).map(Obj)
    ),
    max_leaves=8,
)
WRONG = st.sampled_from([[], Obj([]), "x", 7, True, 1.5])


def values(t: GoType, depth: int = 0) -> st.SearchStrategy[Any]:
    null = st.none()
    if isinstance(t, Scalar):
        good: st.SearchStrategy[Any] = {
            "string": TEXT,
            "bool": st.booleans(),
            "int": st.integers(-(2**64), 2**64) | st.sampled_from([2.0, 1e3, -0.5]),
            "float32": st.floats(-1e6, 1e6) | SAFE_INT | st.sampled_from([1e39, -1e300]),
            "float64": st.floats(-1e300, 1e300) | SAFE_INT,
        }[t.kind]
        return st.one_of(good, good, good, null, WRONG)
    if isinstance(t, AnyValue):
        return any_values
    if t is S.DURATION:
        return st.sampled_from([300, -1, 2.5, "5m", "1h30m", "0", None, True, [1]])
    if t is S.THINK:
        return st.sampled_from([True, False, "high", "low", "max", None, 3, [True]])
    if isinstance(t, Raw) and t.ptr:  # ToolFunctionParameters.properties
        return st.none() | st.lists(st.tuples(TEXT, any_values), max_size=2).map(Obj)
    if isinstance(t, Raw):
        return any_values
    if isinstance(t, Bytes):
        return st.binary(max_size=6).map(lambda b: base64.b64encode(b).decode()) | null | st.just(5)
    if isinstance(t, Map):
        return st.lists(st.tuples(st.sampled_from(["num_ctx", "NUM_CTX", "seed", "stop"]), any_values), max_size=4).map(
            Obj
        ) | st.sampled_from([None, [], "x"])
    if isinstance(t, Slice):
        if depth > 3:
            return st.just([])
        return st.one_of(st.lists(values(t.elem, depth + 1), max_size=3), null, WRONG)
    if isinstance(t, Struct):
        if depth > 3:
            return st.just(Obj([]))
        keys = sorted(t.fields)
        pair = st.sampled_from(keys).flatmap(
            lambda tag: st.tuples(spellings(tag), values(t.fields[tag], depth + 1))
        ) | st.tuples(st.sampled_from(["unknown", "Modle", "x"]), any_values)
        return st.one_of(st.lists(pair, max_size=6).map(Obj), st.lists(pair, max_size=6).map(Obj), null, WRONG)
    raise AssertionError(t)


def bodies(route: str) -> st.SearchStrategy[bytes]:
    struct_t = S.ROUTES[route]
    keys = sorted(struct_t.fields)
    pair = st.sampled_from(keys).flatmap(lambda tag: st.tuples(spellings(tag), values(struct_t.fields[tag])))
    return st.tuples(st.lists(pair, max_size=8), st.booleans(), st.sampled_from(["", " ", "\n{}", " x"])).map(
        lambda a: (dump(Obj(a[0]), a[1]) + a[2]).encode("utf-8", "surrogatepass")
    )


# What each side holds, in one form: Go prints every field (zero values included) and float32 as
# float32; Corral leaves nil out.


def as_float64(value: Any) -> Any:
    """interface{} holds every JSON number as a float64."""
    if isinstance(value, dict):
        return {k: as_float64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_float64(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def f32(x: Any) -> Any:
    return struct.unpack("f", struct.pack("f", x))[0] if isinstance(x, int | float) else x


def zero(t: GoType) -> Any:
    if isinstance(t, Scalar):
        return None if t.ptr else t.zero()
    if isinstance(t, Struct) and not t.ptr:
        return mine_as_go({}, t)
    return None


def mine_as_go(value: Any, t: GoType) -> Any:
    if isinstance(t, Struct):
        return {tag: mine_as_go(value[tag], ft) if tag in value else zero(ft) for tag, ft in t.fields.items()}
    if isinstance(t, Slice):
        return [mine_as_go(v, t.elem) for v in value]
    if isinstance(t, Scalar) and t.kind == "float32":
        return f32(value)
    if isinstance(t, AnyValue | Map | Raw) or (isinstance(t, Scalar) and t.kind == "float64"):
        return as_float64(value)
    return value


def go_as_go(value: Any, t: GoType) -> Any:
    if value is None:
        return None
    if isinstance(t, Struct):
        return {tag: go_as_go(value[tag], ft) for tag, ft in t.fields.items()}
    if isinstance(t, Slice):
        return [go_as_go(v, t.elem) for v in value]
    if isinstance(t, Scalar) and t.kind == "float32":
        return f32(value)
    if isinstance(t, AnyValue | Map | Raw) or (isinstance(t, Scalar) and t.kind == "float64"):
        return as_float64(value)
    return value


def agree(mirror: Mirror, route: str, body: bytes) -> None:
    go_ok, go_value = mirror.decode(route, body)
    try:
        mine = read_body(body, route)
    except InvalidRequest as exc:
        if go_ok:
            # The one case Corral refuses and Go reads: what it reads depends on the Go release.
            assert "given more than once with a shorter array between" in exc.message, (body, exc.message)
        return
    assert go_ok, f"Go refused {body!r}: {go_value}; Corral read {mine.doc}"
    struct_t = S.ROUTES[route]
    assert mine_as_go(mine.doc, struct_t) == go_as_go(go_value, struct_t), body


@pytest.mark.parametrize("route", ROUTES)
def test_the_structs_have_ollamas_fields(mirror: Mirror, route: str) -> None:
    def shape(t: GoType) -> Any:
        while isinstance(t, Slice):
            t = t.elem
        if isinstance(t, Struct):
            return {tag: shape(ft) for tag, ft in t.fields.items()}
        return None

    assert shape(S.ROUTES[route]) == mirror.fields(route)


@pytest.mark.parametrize("route", ROUTES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_corral_reads_every_body_as_go_does(mirror: Mirror, route: str, data: st.DataObject) -> None:
    agree(mirror, route, data.draw(bodies(route)))


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"allowed:1b","Model":"forbidden:7b"}',
        b'{"model":"a","MODEL":null}',
        '{"ſtream":false,"\u212aeep_alive":"5m","model":"m"}'.encode(),
        b'{"mod\\u0065l":"m","Options":{"num_ctx":1},"options":{"NUM_CTX":2},"OPTIONS":{"seed":3}}',
        b'{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}],"messages":[{"Content":"c"}]}',
        b'{"tools":[{"function":{"name":"f","description":"d"}}],"tools":[{"type":"function"}]}',
        b'{"model":"m","prompt":"caf\xc3\xa9 \xff\xfe \xe2\x82 \xed\xa0\x80 \\ud800 \\ud83d\\ude00"}',
        b'{"options":null,"options":{"a":1},"stream":true,"stream":null}',
        b'  {"model":"m"} {"model":"other"}',
        b"null",
        b"[]",
        b'{"top_logprobs":2.0}',
        b'{"top_logprobs":9223372036854775808}',
        b'{"model":"m","context":[1,2,3]}',
    ],
)
def test_chosen_bodies(mirror: Mirror, body: bytes) -> None:
    for route in ("/api/generate", "/api/chat"):
        agree(mirror, route, body)


def test_stale_slice_elements_are_refused_as_ambiguous(mirror: Mirror) -> None:
    # Go reuses the old backing array: the third "tools" merges into a stale second element, which
    # survives or not depending on the Go release's slice growth.
    body = b'{"tools":[{"type":"a"},{"type":"b"}],"tools":[{"type":"c"}],"tools":[{"type":"d"},{"items":1}]}'
    assert mirror.decode("/api/chat", body)[0]
    with pytest.raises(InvalidRequest, match="tools: given more than once"):
        read_body(body, "/api/chat")
