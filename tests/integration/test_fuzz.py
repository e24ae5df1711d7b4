"""Random bodies on every inference route of a running Corral: never a 500 for anything a client sends."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procs import Fleet

ROUTES = [
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
]
values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-3, 3, allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["llama3.2:1b", "nomic-embed-text", "nope", ""]) | values},
    optional={
        "messages": values,
        "prompt": values,
        "input": values,
        "options": values,
        "stream": values,
        "temperature": values,
        "max_tokens": values,
        "keep_alive": values,
        "format": values,
        "think": values,
    },
)


def bounded(doc: dict[str, Any]) -> dict[str, Any]:
    if isinstance(doc.get("options"), dict):
        doc["options"]["num_predict"] = 3  # keep generations short; every other field stays random
    doc["max_tokens"] = 3 if "max_tokens" in doc and isinstance(doc["max_tokens"], int) else doc.get("max_tokens")
    return doc


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), doc=bodies, raw=st.sampled_from([False, False, False, True]))
def test_no_500_for_any_body(fleet: Fleet, route: str, doc: dict[str, Any], raw: bool) -> None:
    content = json.dumps(bounded(doc)).encode()
    if raw:
        content = content[: len(content) // 2]  # truncated JSON
    reply = httpx.post(fleet.url + route, content=content, timeout=30)
    assert reply.status_code < 500, (route, content, reply.status_code, reply.text[:200])
    if route.startswith("/v1/") and reply.status_code >= 400:
        assert "message" in reply.json()["error"]
    elif reply.status_code >= 400:
        assert isinstance(reply.json()["error"], str)
