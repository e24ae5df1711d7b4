"""The caches' pure parts: which requests are deterministic, what the keys hold, entries as bytes, and
embedding answers cut into vectors and put back together byte for byte."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.protocol import cache_entry, embed_wire
from corral.protocol.body import read_body
from corral.protocol.cache_keys import deterministic, embed_key, embed_plan, response_key

BOTH = frozenset({"temperature_zero", "seed"})


@pytest.mark.parametrize(
    ("route", "doc", "rules", "expected"),
    [
        ("/api/generate", {"options": {"temperature": 0}}, BOTH, True),
        ("/api/generate", {"options": {"temperature": 0.0}}, BOTH, True),
        ("/api/generate", {"options": {"temperature": False}}, BOTH, False),  # not a number in JSON
        ("/api/generate", {"options": {"temperature": 0.7}}, BOTH, False),
        ("/api/generate", {}, BOTH, False),  # the model's default temperature: not known here
        ("/api/generate", {"temperature": 0}, BOTH, False),  # native sampling lives in options
        ("/api/chat", {"options": {"seed": 42, "temperature": 0.8}}, BOTH, True),
        ("/api/chat", {"options": {"seed": 42}}, frozenset({"temperature_zero"}), False),
        ("/api/chat", {"options": {"seed": -1}}, BOTH, False),  # Ollama's "random seed"
        ("/v1/chat/completions", {"temperature": 0}, BOTH, True),
        ("/v1/chat/completions", {"seed": 7}, frozenset({"seed"}), True),
        ("/v1/chat/completions", {"options": {"temperature": 0}}, BOTH, False),
    ],
)
def test_deterministic(route: str, doc: dict[str, object], rules: frozenset[str], expected: bool) -> None:
    assert deterministic(route, doc, rules) is expected


def doc_of(body: bytes, route: str = "/api/chat") -> dict[str, object]:
    return read_body(body, route).doc


def test_response_key_ignores_spelling_order_and_keep_alive_but_not_stream_or_scope() -> None:
    a = doc_of(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"options":{"temperature":0}}')
    b = doc_of(
        b'{ "options": {"temperature":0}, "MESSAGES":[{"content":"hi","role":"user"}], "Model":"m", "keep_alive":"1h"}'
    )
    key = response_key("/api/chat", "m:latest", "d1", "key:a", a)
    assert response_key("/api/chat", "m:latest", "d1", "key:a", b) == key
    assert response_key("/api/chat", "m:latest", "d2", "key:a", a) != key  # re-pulled: new weights
    assert response_key("/api/chat", "m:latest", "d1", "key:b", a) != key  # another caller
    assert response_key("/api/chat", "m:latest", "d1", "key:a", {**a, "stream": False}) != key
    assert response_key("/api/chat", "m:latest", "d1", "key:a", {**a, "stream": True}) == key  # the default
    assert response_key("/api/generate", "m:latest", "d1", "key:a", a) != key


def test_embed_plan_per_route() -> None:
    plan = embed_plan("/api/embed", {"model": "e", "input": ["a", "b"], "truncate": False, "keep_alive": "1m"})
    assert plan is not None and plan.kind == "embed" and plan.texts == ("a", "b")
    assert embed_plan("/api/embed", {"model": "e", "input": ""}) is None  # a load request
    assert embed_plan("/api/embed", {"model": "e"}) is None
    assert embed_plan("/api/embeddings", {"model": "e", "prompt": "x"}).texts == ("x",)  # type: ignore[union-attr]
    assert embed_plan("/v1/embeddings", {"model": "e", "input": [1, 2]}) is None  # token arrays
    v1 = embed_plan("/v1/embeddings", {"model": "e", "input": "t", "encoding_format": "BASE64"})
    assert v1 is not None and v1.kind == "v1-base64"
    assert embed_plan("/v1/embeddings", {"model": "e", "input": "t", "encoding_format": "hex"}) is None


def test_embed_key_depends_on_what_shapes_the_vector_and_not_on_the_rest_of_the_batch() -> None:
    def key(doc: dict[str, object], text: str = "a", digest: str = "d") -> str:
        plan = embed_plan("/api/embed", {"model": "e", **doc})
        assert plan is not None
        return embed_key(plan, "e:latest", digest, "-", text)

    base = key({"input": ["a", "b"]})
    assert key({"input": ["z", "a"], "keep_alive": "5m"}) == base
    assert key({"input": ["a"], "truncate": False}) != base
    assert key({"input": ["a"], "dimensions": 256}) != base
    assert key({"input": ["a"]}, digest="other") != base
    assert key({"input": ["a"]}, text="b") != base


def test_entries_round_trip() -> None:
    entry = cache_entry.Entry(200, [(b"content-type", b"application/x-ndjson")], [b"a\n", b"", b"b\n"], True, 3, None)
    assert cache_entry.loads(cache_entry.dumps(entry)) == entry
    with pytest.raises(cache_entry.BadEntry):
        cache_entry.loads(cache_entry.dumps(entry)[:-1])
    with pytest.raises(cache_entry.BadEntry):
        cache_entry.loads(b"not an entry at all")


# Vectors as a Go node prints float32s: the shortest digits, which Python's float repr does not give.
GO_VECTORS = [b"[0.1,-0.25,3e-05]", b"[1,0,-1]", b"[0.33333334,0.6666667,1e-45]"]


def test_embed_split_and_splice_keep_the_node_bytes() -> None:
    node = b'{"model":"e","embeddings":[' + b",".join(GO_VECTORS[:2]) + b'],"total_duration":5,"prompt_eval_count":2}'
    parts = embed_wire.split("embed", node)
    assert parts.items == tuple(GO_VECTORS[:2])
    batch = [GO_VECTORS[1], GO_VECTORS[2], GO_VECTORS[0]]
    out = embed_wire.assemble("embed", batch, parts, "e")
    assert out == b'{"model":"e","embeddings":[' + b",".join(batch) + b'],"total_duration":5,"prompt_eval_count":2}'
    whole = embed_wire.assemble("embed", batch, None, "e<&>")
    assert whole == b'{"model":"e\\u003c\\u0026\\u003e","embeddings":[' + b",".join(batch) + b"]}"


def test_v1_items_are_renumbered_in_the_batch_order() -> None:
    vecs = [base64.b64encode(struct.pack("<2f", i, -i)).decode() for i in range(3)]
    head = '{"object":"list","data":[{"object":"embedding","embedding":"'
    node = (head + vecs[0] + '","index":0}],"model":"e","usage":{"prompt_tokens":4,"total_tokens":4}}\n').encode()
    parts = embed_wire.split("v1-base64", node)
    items = [f'"{v}"'.encode() for v in vecs]
    out = embed_wire.assemble("v1-base64", items, parts, "e")
    doc = json.loads(out)
    assert [d["index"] for d in doc["data"]] == [0, 1, 2]
    assert [d["embedding"] for d in doc["data"]] == vecs
    assert doc["usage"] == {"prompt_tokens": 4, "total_tokens": 4} and out.endswith(b"}\n")
    zero = out.replace(b'"prompt_tokens":4,"total_tokens":4', b'"prompt_tokens":0,"total_tokens":0')
    assert embed_wire.assemble("v1-base64", items, None, "e") == zero


def test_legacy_embeddings_answer() -> None:
    node = b'{"embedding":[0.5,2.25]}'
    parts = embed_wire.split("embeddings", node)
    assert parts.items == (b"[0.5,2.25]",)
    assert embed_wire.assemble("embeddings", parts.items, None, "e") == node
    assert embed_wire.assemble("embeddings", [b"[1]"], parts, "e") == b'{"embedding":[1]}'


@given(st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=4), max_size=5))
def test_any_batch_splits_and_reassembles_to_the_same_bytes(vectors: list[list[float]]) -> None:
    body = {"model": "é", "embeddings": vectors, "total_duration": 1}
    node = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    parts = embed_wire.split("embed", node)
    assert [json.loads(i) for i in parts.items] == vectors
    assert embed_wire.assemble("embed", parts.items, parts, "é") == node
    assert embed_wire.assemble("embed", parts.items[::-1], parts, "é") == node.replace(
        b"[" + b",".join(parts.items) + b"]", b"[" + b",".join(parts.items[::-1]) + b"]"
    )


def test_malformed_answers_are_refused() -> None:
    for body in (b"{", b'{"embeddings":3}', b'{"model":"e"}', b"\xff"):
        with pytest.raises(embed_wire.Malformed):
            embed_wire.split("embed", body)
