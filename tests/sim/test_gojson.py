"""How the simulator reads request bodies, checked against Go's encoding/json as Ollama's handlers
use it (gin's ShouldBindJSON: a json.Decoder into the api/types.go structs).

The expected messages below were produced by Go itself (tests/sim/goref); where a Go toolchain is
installed, test_matches_go re-derives them and a wider corpus from Go on every run.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corral.sim.gobase64 import base64_error
from corral.sim.gojson import decode
from corral.sim.params import parse_keep_alive
from corral.sim.schemas import CHAT, EMBED, GENERATE
from corral.sim.wire import BadRequest

SCHEMAS = {"generate": GENERATE, "chat": CHAT, "embed": EMBED}
GOREF = Path(__file__).parent / "goref"


def outcome(kind: str, body: str) -> dict[str, Any]:
    """The sim's decoding of `body`, in the projection goref prints: an error or chosen fields."""
    try:
        doc = decode(body.encode(), SCHEMAS[kind])
    except BadRequest as exc:
        return {"error": exc.message}
    keep = doc.get("keep_alive")
    seconds = None if keep is None else parse_keep_alive(keep, "5m")
    p: dict[str, Any] = {
        "model": doc.get("model", ""),
        "options": doc.get("options"),
        "keep_alive_ns": None if seconds is None else (2**63 - 1 if seconds < 0 else int(seconds * 1e9)),
        "stream": doc.get("stream"),
        "think": doc.get("think"),
    }
    if kind == "embed":
        p = {k: doc.get(k) for k in ("model", "input", "truncate", "options")} | {"model": doc.get("model", "")}
        p["dimensions"] = doc.get("dimensions", 0)
        return {"ok": p}
    p["top_logprobs"] = doc.get("top_logprobs", 0)
    if kind == "generate":
        p |= {"prompt": doc.get("prompt", ""), "raw": doc.get("raw", False)}
        p["images"] = None if doc.get("images") is None else len(doc["images"])
    else:
        p["messages"] = [
            {
                "role": m.get("role", ""),
                "content": m.get("content", ""),
                "images": None if m.get("images") is None else len(m["images"]),
                "tool_calls": [
                    {"name": c["function"].get("name", ""), "arguments": c["function"].get("arguments")}
                    for c in m.get("tool_calls") or []
                ],
            }
            for m in doc.get("messages") or []
        ] or None
    return {"ok": p}


# (route kind, body, the error Go gives or None, fields of the decoded request to check)
CASES: list[tuple[str, str, str | None, dict[str, Any]]] = [
    # Field names fold case, with Unicode simple folding; the last key naming a field wins.
    ("generate", '{"model":"a","MODEL":"b"}', None, {"model": "b"}),
    ("generate", '{"Model":"b","model":"a"}', None, {"model": "a"}),
    ("generate", '{"model":"a","\u212aeep_alive":0,"\u017ftream":false}', None, {"keep_alive_ns": 0, "stream": False}),
    ("generate", '{"PROMPT":"x","prompt":"y","Prompt":"z"}', None, {"prompt": "z"}),
    # options is a map: its keys are exact, and a second `options` key merges into the first.
    ("generate", '{"options":{"num_ctx":8},"Options":{"NUM_CTX":9}}', None, {"options": {"num_ctx": 8, "NUM_CTX": 9}}),
    # null leaves a string as it was and clears a pointer.
    ("generate", '{"model":"a","model":null,"stream":false,"stream":null}', None, {"model": "a", "stream": None}),
    # Only the first JSON value is read.
    ("generate", '{"model":"a"} trailing garbage', None, {"model": "a"}),
    (
        "chat",
        '{"messages":[{"ROLE":"User","Content":"hi"}]}',
        None,
        {"messages": [{"role": "user", "content": "hi", "images": None, "tool_calls": []}]},
    ),
    # Type errors: Go's UnmarshalTypeError, naming the struct and the field path.
    (
        "generate",
        '{"stream":"yes"}',
        "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool",
        {},
    ),
    (
        "chat",
        '{"Stream":"yes"}',
        "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool",
        {},
    ),
    (
        "generate",
        '{"top_logprobs":1.0}',
        "json: cannot unmarshal number 1.0 into Go struct field GenerateRequest.top_logprobs of type int",
        {},
    ),
    (
        "generate",
        '{"prompt":5}',
        "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string",
        {},
    ),
    ("generate", "[1]", "json: cannot unmarshal array into Go value of type api.GenerateRequest", {}),
    (
        "generate",
        '{"options":[1]}',
        "json: cannot unmarshal array into Go struct field GenerateRequest.options of type map[string]interface {}",
        {},
    ),
    # Message decodes through an alias type: its errors carry the outer field path.
    (
        "chat",
        '{"messages":[{"role":1}]}',
        "json: cannot unmarshal number into Go struct field ChatRequest.messages of type string",
        {},
    ),
    (
        "chat",
        '{"messages":["hi"]}',
        "json: cannot unmarshal string into Go struct field ChatRequest.messages of type api.Alias",
        {},
    ),
    # The first type error is kept, decoding goes on.
    (
        "generate",
        '{"stream":"x","raw":"y"}',
        "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool",
        {},
    ),
    # Images are []byte: standard base64 with padding; the error is the base64 package's.
    ("generate", '{"images":["QUJD","QQ=="]}', None, {"images": 2}),
    ("generate", '{"images":["not base64!"]}', "illegal base64 data at input byte 3", {}),
    ("generate", '{"images":["QQ"]}', "illegal base64 data at input byte 0", {}),
    ("generate", '{"images":["QQ="]}', "illegal base64 data at input byte 3", {}),
    ("chat", '{"messages":[{"images":["@@"]}],"stream":1}', "illegal base64 data at input byte 0", {}),
    # Custom unmarshalers: keep_alive (api.Duration) and think (api.ThinkValue).
    ("generate", '{"keep_alive":"300"}', 'time: missing unit in duration "300"', {}),
    ("generate", '{"keep_alive":true}', "Unsupported type: 'bool'", {}),
    ("generate", '{"keep_alive":-1}', None, {"keep_alive_ns": 2**63 - 1}),
    (
        "generate",
        '{"think":"maybe"}',
        'invalid think value: "maybe" (must be "high", "medium", "low", "max", true, or false)',
        {},
    ),
    (
        "generate",
        '{"think":3}',
        'think must be a boolean or string ("high", "medium", "low", "max", true, or false)',
        {},
    ),
    ("embed", '{"input":["a","",""],"Dimensions":4}', None, {"input": ["a", "", ""], "dimensions": 4}),
    (
        "embed",
        '{"dimensions":"4"}',
        "json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int",
        {},
    ),
    ("generate", "", "missing request body", {}),
    ("generate", "  \n", "missing request body", {}),
    ("generate", '{"model":', "unexpected EOF", {}),
]


@pytest.mark.parametrize(("kind", "body", "error", "fields"), CASES)
def test_decodes_as_go_does(kind: str, body: str, error: str | None, fields: dict[str, Any]) -> None:
    got = outcome(kind, body)
    if error is not None:
        assert got == {"error": error}
    else:
        assert "ok" in got, got
        assert {k: got["ok"][k] for k in fields} == fields


def test_base64_offsets() -> None:
    for text, offset in [("", None), ("QUJD", None), ("QUJD\nQUJD", None), ("QQ==", None), ("Q", 0), ("QUJDQ", 4)]:
        assert base64_error(text) == offset, text
    for text, offset in [("QUJD!", 4), ("QQ=", 3), ("QQ==QQ==", 4), ("Q===", 1), ("QQ=x", 2), ("QUJD\n", None)]:
        assert base64_error(text) == offset, text


def _go_binary(tmp: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain: the comparison with encoding/json itself needs `go`")
    out = tmp / "goref"
    subprocess.run([go, "build", "-o", str(out), "."], cwd=GOREF, check=True, timeout=120, capture_output=True)
    return out


def _corpus() -> list[tuple[str, str]]:
    rng = random.Random(7)
    cases = [(kind, body) for kind, body, _, _ in CASES]
    keys = ["model", "MODEL", "Model", "mOdEl", "\u017ftream", "stream", "Stream", "prompt", "options", "Options"]
    values = ['"a"', '"b"', "null", "true", "1", "1.5", "[]", '{"num_ctx":2}', '"yes"', '["QQ=="]']
    for _ in range(120):
        pairs = [f"{json.dumps(rng.choice(keys))}:{rng.choice(values)}" for _ in range(rng.randrange(1, 5))]
        cases.append((rng.choice(["generate", "chat"]), "{" + ",".join(pairs) + "}"))
    for _ in range(200):
        raw = base64.b64encode(rng.randbytes(rng.randrange(0, 7))).decode()
        chars = list(raw)
        for _ in range(rng.randrange(0, 3)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice("=\n!A\r"))
        cases.append(("generate", json.dumps({"images": ["".join(chars)]})))
    return cases


def test_matches_go(tmp_path: Path) -> None:
    """The sim and Go's encoding/json agree on every body of a corpus (skipped without Go)."""
    binary = _go_binary(tmp_path)
    corpus = _corpus()
    stdin = json.dumps([{"type": kind, "body": body} for kind, body in corpus])
    result = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True, check=True, timeout=60)
    expected = json.loads(result.stdout)
    for (kind, body), want in zip(corpus, expected, strict=True):
        got = outcome(kind, body)
        if "ok" in want:  # goref prints every field of its projection; compare those
            assert "ok" in got, (body, got, want)
            assert {k: got["ok"].get(k) for k in want["ok"]} == want["ok"], body
        else:
            assert got == want, body
