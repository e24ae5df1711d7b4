"""corral.protocol.body: the body as the node reads it (issue 9, item 1). These cases need no Go; the
same rule is checked against Go's encoding/json in test_body_vs_go.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.domain.errors import InvalidRequest
from corral.protocol.body import encode, read_body


def doc(body: bytes | str, route: str = "/api/chat") -> dict[str, Any]:
    return read_body(body.encode() if isinstance(body, str) else body, route).doc


def test_a_case_variant_key_is_the_field_and_the_last_one_wins() -> None:
    # The allow-list bypass of the issue: Ollama runs "forbidden:7b".
    assert doc('{"model":"allowed:1b","Model":"forbidden:7b"}')["model"] == "forbidden:7b"
    assert doc('{"MODEL":"a","model":"b"}')["model"] == "b"
    assert "Model" not in doc('{"model":"allowed:1b","Model":"forbidden:7b"}')


def test_every_checked_field_is_found_whatever_its_case() -> None:
    native = doc('{"Options":{"num_ctx":1000000},"Messages":[{"ROLE":"User","Content":"hi"}],"Prompt":"p"}')
    assert native["options"] == {"num_ctx": 1000000}
    assert native["messages"] == [{"role": "user", "content": "hi"}]  # api.Message lower-cases the role
    generate = doc('{"PROMPT":"p","System":"s","SUFFIX":"x"}', "/api/generate")
    assert (generate["prompt"], generate["system"], generate["suffix"]) == ("p", "s", "x")
    v1 = doc('{"MAX_TOKENS":99999,"Stream_Options":{"Include_Usage":true}}', "/v1/chat/completions")
    assert v1["max_tokens"] == 99999 and v1["stream_options"] == {"include_usage": True}


def test_unicode_folding_as_go_does_it() -> None:
    assert doc('{"ſtream":false}')["stream"] is False  # U+017F LATIN SMALL LETTER LONG S
    assert doc('{"\u212aeep_alive":"5m"}')["keep_alive"] == "5m"  # U+212A KELVIN SIGN
    assert doc('{"mod\\u0065l":"escaped"}')["model"] == "escaped"
    # No other letter folds onto an ASCII one: U+0130 is not "i", so this key is unknown.
    assert "think" not in doc('{"th\u0130nk":true}')


def test_map_keys_are_exact_and_not_fields() -> None:
    # Options is map[string]any; Options.FromMap ignores "NUM_CTX", so a cap must not see it as num_ctx.
    assert doc('{"options":{"NUM_CTX":1000000,"num_ctx":2048}}')["options"] == {"NUM_CTX": 1000000, "num_ctx": 2048}


def test_null_keeps_a_value_but_clears_a_pointer_map_or_slice() -> None:
    assert doc('{"model":"a","MODEL":null}')["model"] == "a"
    cleared = doc('{"stream":false,"Stream":null,"options":{"a":1},"options":null,"messages":[],"messages":null}')
    assert not {"stream", "options", "messages"} & cleared.keys()


def test_a_repeated_object_merges_into_the_first() -> None:
    assert doc('{"options":{"num_ctx":1},"Options":{"seed":2}}')["options"] == {"num_ctx": 1, "seed": 2}
    v1 = doc(
        '{"response_format":{"type":"json_schema"},"Response_Format":{"json_schema":{"schema":{}}}}',
        "/v1/chat/completions",
    )
    assert v1["response_format"] == {"type": "json_schema", "json_schema": {"schema": {}}}


def test_a_repeated_array_reuses_its_elements() -> None:
    # tools: []Tool (plain structs) merge element-wise; messages: api.Message decodes into a fresh value.
    tools = doc('{"tools":[{"type":"function","items":1}],"tools":[{"items":2}]}')["tools"]
    assert tools == [{"type": "function", "items": 2}]
    messages = doc('{"messages":[{"role":"user","content":"a"}],"messages":[{"content":"b"}]}')["messages"]
    assert messages == [{"content": "b"}]


def test_a_stale_slice_element_is_refused_as_ambiguous() -> None:
    body = '{"tools":[{"type":"a"},{"type":"b"}],"tools":[{"type":"c"}],"tools":[{"type":"d"},{"items":1}]}'
    with pytest.raises(InvalidRequest) as err:
        doc(body)
    assert err.value.status == 400 and err.value.param == "tools"


def test_unknown_keys_are_kept_as_spelt_and_never_shadow_a_field() -> None:
    got = doc('{"model":"m","n":2,"N":3,"Modle":"x"}', "/v1/chat/completions")
    assert got == {"model": "m", "n": 2, "N": 3, "Modle": "x"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"model":5}', "model"),
        ('{"messages":"hi"}', "messages"),
        ('{"messages":[{"role":1}]}', "messages[0].role"),
        ('{"top_logprobs":2.0}', "top_logprobs"),
        ('{"top_logprobs":1e3}', "top_logprobs"),
        ('{"top_logprobs":9223372036854775808}', "top_logprobs"),
        ('{"stream":"true"}', "stream"),
        ('{"options":[1]}', "options"),
        ('{"tools":[{"function":{"name":7}}]}', "tools[0].function.name"),
        ('{"keep_alive":true}', "keep_alive"),
    ],
)
def test_what_go_refuses_is_a_400_naming_the_field(body: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        doc(body)
    assert err.value.status == 400 and err.value.param == field and err.value.message.startswith(field + ":")


def test_v1_integer_fields_refuse_floats_but_float_fields_take_integers() -> None:
    with pytest.raises(InvalidRequest, match="max_tokens"):
        doc('{"max_tokens":1.0}', "/v1/chat/completions")
    assert doc('{"temperature":1,"top_p":2}', "/v1/chat/completions") == {"temperature": 1, "top_p": 2}


def test_invalid_utf8_is_read_as_go_reads_it() -> None:
    # Go replaces each invalid byte (and each lone surrogate escape) with U+FFFD: Ollama accepts the body.
    got = read_body(b'{"model":"m","prompt":"a\xffb\xe2\x82c \\ud800"}', "/api/generate")
    assert got.doc["prompt"] == "a\ufffdb\ufffd\ufffdc \ufffd"
    assert not got.exact  # a case-sensitive Python node would refuse the raw bytes
    assert doc('{"prompt":"\\ud83d\\ude00"}', "/api/generate")["prompt"] == "😀"


def test_the_first_json_value_is_read_and_what_follows_is_ignored() -> None:
    # gin's ShouldBindJSON uses a json.Decoder: it stops after the first value.
    assert doc(' \n{"model":"a"} {"model":"b"}') == {"model": "a"}
    assert doc("null") == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "missing request body"),
        (b" \r\n\t", "missing request body"),
        (b'{"model":', "invalid JSON"),
        (b'{"temperature":NaN}', "invalid JSON"),
        (b"\xef\xbb\xbf{}", "invalid JSON"),  # a BOM: Go's scanner refuses it
        (b"[1]", "must be a JSON object"),
        (b"[" * 100_000, "invalid JSON"),
    ],
)
def test_unreadable_bodies_are_a_clear_400(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        read_body(body, "/api/chat")


def test_exact_tells_whether_a_case_sensitive_reader_sees_the_same() -> None:
    assert read_body(b'{"model":"m","stream":false,"options":{"NUM_CTX":1}}', "/api/chat").exact
    assert not read_body(b'{"Model":"m"}', "/api/chat").exact
    assert not read_body(b'{"model":"a","model":"b"}', "/api/chat").exact
    canonical = read_body(b'{"model":"a","Model":"b","options":{"x":1},"OPTIONS":{"y":2}}', "/api/chat")
    assert json.loads(encode(canonical.doc)) == {"model": "b", "options": {"x": 1, "y": 2}}
    assert encode({"input": [2**70]}) == b'{"input":[1180591620717411303424]}'


def test_routes_without_a_struct_read_plain_json() -> None:
    assert doc('{"a":1,"A":2,"a":3}', "/admin/backends") == {"a": 3, "A": 2}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["/api/chat", "/api/generate", "/v1/chat/completions", "/v1/responses", "/v1/messages"]),
    st.dictionaries(
        st.sampled_from(["model", "Model", "messages", "input", "options", "tools", "system"]), json_values
    ),
)
def test_any_json_object_is_read_or_refused_with_a_400(route: str, body: dict[str, Any]) -> None:
    try:
        got = read_body(json.dumps(body).encode(), route)
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.message
    else:
        assert isinstance(got.doc, dict)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_read_or_refused_with_a_400(body: bytes) -> None:
    try:
        read_body(body, "/api/chat")
    except InvalidRequest as exc:
        assert exc.status == 400


canonical_chat = st.fixed_dictionaries(
    {
        "model": st.text(),
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text()})
        ),
    },
    optional={"stream": st.booleans(), "options": st.dictionaries(st.text(max_size=8), json_values, max_size=4)},
)


@settings(max_examples=200, deadline=None)
@given(canonical_chat)
def test_a_canonical_body_reads_as_plain_json_and_is_exact(body: dict[str, Any]) -> None:
    got = read_body(json.dumps(body).encode(), "/api/chat")
    assert got.exact and got.doc == body
