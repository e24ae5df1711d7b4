"""What the caches key on, and which requests they may answer (pure; docs/cache.md).

A response is cached only for a request that is deterministic by its own parameters (temperature 0,
or a fixed seed, as configured): the same request then gets the same answer from the same weights.
Keys hash the route, the model's digest (a re-pulled model, new weights, misses), the caller's scope,
and the request body as Ollama reads it (the Go-faithful document of corral.protocol.body, encoded
with sorted keys), so spelling, key order and whitespace do not split the cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

import orjson

# Routes whose sampling parameters live in `options` (api.Options, api/types.go); the others (OpenAI,
# Anthropic) have them at the top level of the body.
NATIVE_GENERATION: Final = frozenset({"/api/generate", "/api/chat"})
# What does not change the answer's bytes and so stays out of the key: how long the runner stays loaded.
# `stream` changes the wire format (NDJSON lines vs one JSON body), so the key holds its effective value.
_NOT_IN_KEY: Final = frozenset({"keep_alive", "stream"})
_EMBED_INPUTS: Final = frozenset({"input", "prompt", "keep_alive"})


def _number(value: Any) -> bool:
    return type(value) is int or type(value) is float  # not bool: True == 1 in Python, not in JSON


def deterministic(route: str, doc: dict[str, Any], rules: frozenset[str]) -> bool:
    """Whether the request fixes its own sampling: `temperature_zero` (greedy decoding) or `seed` (a
    fixed seed; -1, Ollama's default, means a random one)."""
    params: Any = doc.get("options") if route in NATIVE_GENERATION else doc
    if not isinstance(params, dict):
        return False
    if "temperature_zero" in rules:
        temperature = params.get("temperature")
        if _number(temperature) and temperature == 0:
            return True
    if "seed" in rules:
        seed = params.get("seed")
        if (type(seed) is int and seed >= 0) or (type(seed) is float and seed.is_integer() and seed >= 0):
            return True
    return False


def effective_stream(route: str, doc: dict[str, Any]) -> bool:
    """Whether the answer is a stream: native generate/chat stream unless told not to (a null `stream`
    is Go's nil *bool, the default); the OpenAI and Anthropic routes only when asked."""
    stream = doc.get("stream")
    if stream is None:
        return route in NATIVE_GENERATION
    return stream is True


def canonical(doc: dict[str, Any], leave_out: frozenset[str] = _NOT_IN_KEY) -> bytes:
    material = {k: v for k, v in doc.items() if k not in leave_out}
    try:
        return orjson.dumps(material, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(material, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))  # length-prefixed: no two part lists hash alike
        h.update(data)
    return h.hexdigest()


def response_key(route: str, model: str, digest: str, scope: str, doc: dict[str, Any]) -> str:
    """The response cache's key: route, normalised model, digest, scope, effective stream, body."""
    stream = b"stream" if effective_stream(route, doc) else b"whole"
    return "r:" + _hash(route, model, digest, scope, stream, canonical(doc))


@dataclass(frozen=True, slots=True)
class EmbedPlan:
    """An embedding request split per input. `kind` is the answer's format (each keeps its own bytes:
    /api/embed and /v1 write float32, /api/embeddings float64, base64 is another encoding);
    `params` is everything else that shapes a vector (truncate, dimensions, options)."""

    kind: str  # "embed", "embeddings", "v1-float" or "v1-base64"
    texts: tuple[str, ...]
    params: bytes


def embed_plan(route: str, doc: dict[str, Any]) -> EmbedPlan | None:
    """The request's inputs, or None when it is not a plain batch of strings (a load request with no
    input, token arrays, an unknown encoding): those go to a node as they are."""
    if route == "/api/embeddings":
        prompt = doc.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return None
        return EmbedPlan("embeddings", (prompt,), canonical(doc, _EMBED_INPUTS))
    raw = doc.get("input")
    if isinstance(raw, str):
        texts: tuple[str, ...] = (raw,)
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = tuple(raw)
    else:
        return None
    if route == "/api/embed":
        if texts == ("",):
            return None  # an empty string is a load request (server/routes.go EmbedHandler)
        return EmbedPlan("embed", texts, canonical(doc, _EMBED_INPUTS))
    if route == "/v1/embeddings":
        encoding = doc.get("encoding_format")
        encoding = "float" if encoding in (None, "") else encoding
        if not isinstance(encoding, str) or encoding.lower() not in ("float", "base64"):
            return None  # the node's 400 says what is wrong
        params = {k: v for k, v in doc.items() if k != "encoding_format"}
        return EmbedPlan("v1-" + encoding.lower(), texts, canonical(params, _EMBED_INPUTS))
    return None


def embed_key(plan: EmbedPlan, model: str, digest: str, scope: str, text: str) -> str:
    """One input's key: format, model, digest, scope, the other parameters, and the text's hash."""
    return "e:" + _hash(plan.kind, model, digest, scope, plan.params, text)
