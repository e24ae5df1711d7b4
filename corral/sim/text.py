"""Deterministic model output: text tokens, JSON for `format`, tool-call arguments, thinking, embeddings.

Everything is a pure function of (model, input, seed), so a test can compare a streamed answer with a
non-streamed one, or one node's answer with another's.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

from corral.sim.catalog import normalize, stable_hash

# Read with findall rather than split so the vocabulary stays three lines long.
_WORDS = tuple(
    re.findall(
        r"\S+",
        "the a model node token fleet river light stone cloud answer question simple quiet bright swift garden "
        "signal ocean pattern window story careful minute engine paper silver forest winter echo bridge lantern "
        "harbor meadow compass thunder velvet orbit crystal ember falcon glacier horizon",
    )
)
_THOUGHTS = tuple(re.findall(r"\S+", "Let me think about this step by step before I answer ."))
MAX_TOKENS = 1_000_000  # an unlimited num_predict still ends
_PLACES = ("Paris", "Lisbon", "Oslo", "Kyoto", "Lima")


_TOKEN = re.compile(r"\w+|[^\w\s]")
_VOCAB: dict[str, int] = {}
_VOCAB_CAP = 200_000  # memoised ids; beyond this, ids are still computed, just not remembered


def count_tokens(text: str) -> int:
    """A plausible token count: about one per word or punctuation mark."""
    return max(1, len(_TOKEN.findall(text)))


def _token_id(word: str) -> int:
    value = zlib.crc32(word.encode()) % 127_990 + 10  # ids 10..127999, a plausible vocabulary
    if len(_VOCAB) < _VOCAB_CAP:
        _VOCAB[word] = value
    return value


def token_ids(text: str) -> list[int]:
    """The text's tokens (the words and marks count_tokens counts) as ids. The same text is the same
    ids in every process, so a `context` returned by one node means the same tokens to another."""
    words = _TOKEN.findall(text)
    get = _VOCAB.get
    ids = [get(w, -1) for w in words]
    if -1 in ids:
        ids = [i if i >= 0 else _token_id(w) for i, w in zip(ids, words, strict=True)]
    return ids


def _rng(*parts: object) -> random.Random:
    return random.Random(stable_hash(*parts))


def natural_length(model: str, prompt: str, seed: int) -> int:
    """How many tokens the model 'wants' to say: 20–60, fixed per input so tests stay fast and stable."""
    return 20 + _rng("len", normalize(model), prompt, seed).randrange(41)


def answer_tokens(model: str, prompt: str, seed: int, count: int | None = None) -> Iterator[str]:
    """Word tokens, the first capitalised, each later one with its leading space. Without `count`, the
    natural answer, ending in a full stop; with it, exactly `count` words (an answer cut short)."""
    rng = _rng("text", normalize(model), prompt, seed)
    n = natural_length(model, prompt, seed) if count is None else count
    for i in range(n):
        word = rng.choice(_WORDS)
        token = " " + word if i else word.capitalize()
        yield token + "." if count is None and i == n - 1 else token


def thinking_tokens(model: str, prompt: str, seed: int) -> list[str]:
    n = 4 + _rng("think", normalize(model), prompt, seed).randrange(len(_THOUGHTS) - 4)
    return [w if i == 0 else " " + w for i, w in enumerate(_THOUGHTS[:n])]


def _value(schema: Any, key: str, rng: random.Random) -> Any:
    if not isinstance(schema, dict):
        return " ".join(rng.choice(_WORDS) for _ in range(2))
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _value(v, k, rng) for k, v in props.items()}
    if kind == "array":
        return [_value(schema.get("items"), key, rng)]
    if kind == "integer":
        return rng.randrange(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return True
    if any(k in key.lower() for k in ("location", "city", "place")):
        return rng.choice(_PLACES)
    return " ".join(rng.choice(_WORDS) for _ in range(1 + rng.randrange(3)))


def json_tokens(model: str, prompt: str, seed: int, fmt: Any) -> list[str]:
    """Valid JSON text for `format` ("json" or a schema), split into short token-like pieces."""
    rng = _rng("json", normalize(model), prompt, seed)
    if isinstance(fmt, dict):
        doc = _value(fmt, "", rng)
    else:
        doc = {"answer": " ".join(rng.choice(_WORDS) for _ in range(3 + rng.randrange(5)))}
    text = json.dumps(doc, ensure_ascii=False)
    return re.findall(r".{1,4}", text, re.S)


def tool_call(tools: list[Any], last_user: str, seed: int) -> dict[str, Any] | None:
    """The tool call a model makes when the user asks for one (mentions a tool, the weather, 'call')."""
    functions: list[dict[str, Any]] = [
        t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if not functions:
        return None
    text = last_user.lower()
    named = [f for f in functions if str(f.get("name", "")).lower() in text]
    if not named and not re.search(r"weather|call|tool|use", text):
        return None
    fn = (named or functions)[0]
    params: dict[str, Any] = fn["parameters"] if isinstance(fn.get("parameters"), dict) else {}
    props: dict[str, Any] = params["properties"] if isinstance(params.get("properties"), dict) else {}
    required = params.get("required") or list(props)
    rng = _rng("tool", fn.get("name"), last_user, seed)
    args = {k: _value(props.get(k), k, rng) for k in required if k in props}
    call_id = "call_" + format(stable_hash("call", fn.get("name"), last_user, seed) % 36**8, "08x")[:8]
    return {"id": call_id, "function": {"index": 0, "name": fn.get("name", ""), "arguments": args}}


def embedding(model: str, text: str, dims: int) -> list[float]:
    """A deterministic unit vector. Values are float32 (as Ollama's), so base64 and JSON forms agree."""
    rng = _rng("embed", normalize(model), text)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    return unit_float32(vector)


def unit_float32(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    scaled = [x / norm for x in vector]
    return list(struct.unpack(f"<{len(scaled)}f", struct.pack(f"<{len(scaled)}f", *scaled)))
